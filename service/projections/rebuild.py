"""Rebuilding the projections from the ledger, as set-based SQL.

Because the fold is a two-phase set (see fold.py), a connection's final state is a function of
two of its applied (not prevented) events: the first one of all, by position, and the first
destroy (fd):

    live                = fd IS NULL
    creationTime, data  from the first event (a create, or a destroy that came before any create)
    created_position    the first event's position if it is a create, else NULL
    destroyed_position  fd, and reason from the event at fd
    created_event_time, destroyed_event_time   the timestamps of those two events

which is exactly what the live fold computes one event at a time. (The first event is a create
exactly when the first create comes before the first destroy, the fold's condition for a
connection that was live.) Hooks are never called: their decision is read from
`default_prevented` on each row. The property tests check that the two agree for arbitrary,
shuffled, duplicated input.

The statements differ by database only in how they reach the attributes of those two events:

- SQLite has no hash aggregation: grouping sorts the rows, and looking the two events up again
  by position afterwards is a random read of the ledger for every connection. So each event's
  columns are carried through the grouping instead, with SQLite's documented "bare column"
  rule: in a query with a single min(), the other columns come from the row that has the
  minimum (https://www.sqlite.org/lang_select.html#bareagg). One grouping gives the first
  event, another (of the destroys only) the first destroy. `NOT INDEXED` stops SQLite from
  walking the (session_id, sequence) index for a head start on the order, which it would pay
  for with a random read of the table per row. The groups come out in primary-key order, so
  the inserts fill the projection's B-tree from left to right.
- PostgreSQL groups with a hash table in one scan and then finds the two events by position,
  as two hash joins against the ledger; given the memory for it (see PostgresStore.rebuild),
  nothing spills to disk. The table's owner inserts the rows into the table without its
  primary key and builds the key afterwards, in one sort (REBUILD_CONNECTIONS_POSTGRES): no
  sort of the rows and no index upkeep row by row, 4.5 s in all for a million events against
  5.5 s. Any other role keeps the key and inserts the rows sorted by it
  (REBUILD_CONNECTIONS_POSTGRES_SORTED), so that the index grows at its right edge instead of
  at random places (a sixth faster than unsorted). That sort
  compares bytes (COLLATE "C"): a locale's comparison costs a quarter of the statement, and the
  order only has to be close to the index's for the inserts to stay local (for UTF-8 text under
  the C or C.UTF-8 locales it is the same order).
"""

from __future__ import annotations

__all__ = [
    "REBUILD_CONNECTIONS_POSTGRES",
    "REBUILD_CONNECTIONS_POSTGRES_SORTED",
    "REBUILD_CONNECTIONS_SQLITE",
    "REBUILD_SESSIONS",
]

_INSERT = """
INSERT INTO projection_connections
    (session_id, connection_id, live, creation_time, data, created_position,
     destroyed_position, reason, created_event_time, destroyed_event_time)
"""

REBUILD_CONNECTIONS_SQLITE = (
    _INSERT
    + """
SELECT f.session_id, f.connection_id, d.position IS NULL, f.creation_time, f.data,
       CASE WHEN f.type = 'connectionCreated' THEN f.position END, d.position, d.reason,
       CASE WHEN f.type = 'connectionCreated' THEN f.event_time END, d.event_time
FROM (
    SELECT session_id, connection_id, min(position) AS position, type, creation_time, data,
           event_time
    FROM connection_ledger NOT INDEXED
    WHERE NOT default_prevented
    GROUP BY session_id, connection_id
) AS f
LEFT JOIN (
    SELECT session_id, connection_id, min(position) AS position, reason, event_time
    FROM connection_ledger NOT INDEXED
    WHERE NOT default_prevented AND type = 'connectionDestroyed'
    GROUP BY session_id, connection_id
) AS d ON d.session_id = f.session_id AND d.connection_id = f.connection_id
"""
)

REBUILD_CONNECTIONS_POSTGRES = (
    _INSERT
    + """
SELECT f.session_id, f.connection_id, f.fd IS NULL, src.creation_time, src.data,
       CASE WHEN src.type = 'connectionCreated' THEN f.first END, f.fd, d.reason,
       CASE WHEN src.type = 'connectionCreated' THEN src.event_time END, d.event_time
FROM (
    SELECT session_id, connection_id,
           min(position) AS first,
           min(position) FILTER (WHERE type = 'connectionDestroyed') AS fd
    FROM connection_ledger
    WHERE NOT default_prevented
    GROUP BY session_id, connection_id
) AS f
JOIN connection_ledger AS src ON src.position = f.first
LEFT JOIN connection_ledger AS d ON d.position = f.fd
"""
)

REBUILD_CONNECTIONS_POSTGRES_SORTED = (
    REBUILD_CONNECTIONS_POSTGRES + 'ORDER BY f.session_id COLLATE "C", f.connection_id COLLATE "C"\n'
)

REBUILD_SESSIONS = """
INSERT INTO projection_sessions (session_id, count)
SELECT session_id, SUM(CASE WHEN live THEN 1 ELSE 0 END)
FROM projection_connections
GROUP BY session_id
"""
