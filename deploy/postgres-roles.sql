-- Least privilege for Connection Ledger on PostgreSQL.
--
-- ledger_owner owns the tables and runs the migrations (`connledger migrate`, and `rebuild`,
-- which truncates the projections). ledger_service is what `connledger serve` connects as: it
-- may read and append to the ledger and nothing more there, and keeps the projections, the
-- relay checkpoint and the rejected store. Its `serve` finds the schema at head and migrates
-- nothing. Run with psql, as a superuser, after the first `connledger migrate` by the owner:
--
--   psql -v service_password='...' -f deploy/postgres-roles.sql DBNAME
--
-- The password is required, and set (again) on every run: running the file once more with a
-- new one changes it. Give it in LEDGER_DATABASE_URL
-- (postgresql+asyncpg://ledger_service:...@host/DBNAME).
--
-- The ledger's triggers refuse UPDATE, DELETE and TRUNCATE for every role, owner included;
-- these grants make the refusal a permission error as well, before any trigger runs.

\set ON_ERROR_STOP on

\if :{?service_password}
\else
  -- Not a role that logs in with no password, or with the literal text of a variable.
  DO $$ BEGIN RAISE EXCEPTION 'service_password is not set: run psql -v service_password=''...'' -f deploy/postgres-roles.sql DBNAME'; END $$;
\endif
SELECT :'service_password' = '' AS service_password_is_empty \gset
\if :service_password_is_empty
  DO $$ BEGIN RAISE EXCEPTION 'service_password is empty: give the role a password'; END $$;
\endif

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_service') THEN
    CREATE ROLE ledger_service LOGIN;
  END IF;
END $$;
-- psql quotes the value (:'...'); the server stores only its SCRAM verifier
-- (password_encryption, scram-sha-256 by default since PostgreSQL 14).
ALTER ROLE ledger_service WITH LOGIN PASSWORD :'service_password';

-- Nobody creates objects in the public schema by default (PostgreSQL 14 and older let every
-- role, through PUBLIC): the service role must not be able to add a table, a function or a
-- view beside the ledger. The tables' owner keeps it, for the migrations to come.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM ledger_service;
DO $$
BEGIN
  EXECUTE format('GRANT USAGE, CREATE ON SCHEMA public TO %I',
                 (SELECT tableowner FROM pg_tables
                   WHERE schemaname = 'public' AND tablename = 'connection_ledger'));
END $$;
GRANT USAGE ON SCHEMA public TO ledger_service;

-- The ledger: read and append, nothing else.
REVOKE ALL ON connection_ledger FROM ledger_service;
GRANT SELECT, INSERT ON connection_ledger TO ledger_service;

-- Ledger bookkeeping, projections and checkpoints: kept up to date by every append.
GRANT SELECT, INSERT, UPDATE ON ledger_sessions, projection_connections, projection_sessions,
    projection_checkpoints TO ledger_service;

-- Claims on the events whose hooks an instance is running: taken, taken over, let go. The
-- table comes with migration 0004; on an older schema there is nothing to grant yet (run this
-- file again after the migration).
DO $$
BEGIN
  IF to_regclass('hook_claims') IS NOT NULL THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON hook_claims TO ledger_service;
  END IF;
END $$;

-- Rejected messages: stored and listed.
GRANT SELECT, INSERT ON rejected_messages TO ledger_service;
GRANT USAGE ON SEQUENCE rejected_messages_id_seq TO ledger_service;

-- `serve` checks the schema version at start.
GRANT SELECT ON alembic_version TO ledger_service;
