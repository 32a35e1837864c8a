-- Least privilege for Connection Ledger on PostgreSQL.
--
-- ledger_owner owns the schema and runs the migrations (`connledger migrate`, and `rebuild`,
-- which truncates the projections). ledger_service is what `connledger serve` connects as: it
-- may read and append to the ledger and nothing more there, and keeps the projections, the
-- relay checkpoint and the rejected store. Its `serve` finds the schema at head and migrates
-- nothing. Run as a superuser after the first `connledger migrate` by ledger_owner:
--
--   psql -v service_password="'...'" -f deploy/postgres-roles.sql DBNAME
--
-- The ledger's triggers refuse UPDATE, DELETE and TRUNCATE for every role, owner included;
-- these grants make the refusal a permission error as well, before any trigger runs.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_service') THEN
    CREATE ROLE ledger_service LOGIN;
  END IF;
END $$;

GRANT USAGE ON SCHEMA public TO ledger_service;

-- The ledger: read and append, nothing else.
REVOKE ALL ON connection_ledger FROM ledger_service;
GRANT SELECT, INSERT ON connection_ledger TO ledger_service;

-- Ledger bookkeeping, projections and checkpoints: kept up to date by every append.
GRANT SELECT, INSERT, UPDATE ON ledger_sessions, projection_connections, projection_sessions,
    projection_checkpoints TO ledger_service;

-- Rejected messages: stored and listed.
GRANT SELECT, INSERT ON rejected_messages TO ledger_service;
GRANT USAGE ON SEQUENCE rejected_messages_id_seq TO ledger_service;

-- `serve` checks the schema version at start.
GRANT SELECT ON alembic_version TO ledger_service;
