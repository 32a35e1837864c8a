"""Rebuilding the projections from the ledger, as set-based SQL that both databases run.

Because the fold is a two-phase set (see fold.py), a connection's final state is a function of
the positions of its first applied create (fc) and first applied destroy (fd):

    live = fd IS NULL
    attributes (creationTime, data) from the row at fc if fc comes before fd, else from fd
    created_position = fc if it comes before fd, else NULL; destroyed_position = fd

which is exactly what the live fold computes one event at a time. Hooks are never called: their
decision is read from `default_prevented` on each row. The property tests check that the two
agree for arbitrary, shuffled, duplicated input.
"""

from __future__ import annotations

__all__ = ["REBUILD_CONNECTIONS", "REBUILD_SESSIONS"]

REBUILD_CONNECTIONS = """
INSERT INTO projection_connections
    (session_id, connection_id, live, creation_time, data, created_position,
     destroyed_position, reason)
SELECT f.session_id, f.connection_id,
       f.fd IS NULL,
       src.creation_time, src.data,
       CASE WHEN f.fc IS NOT NULL AND (f.fd IS NULL OR f.fc < f.fd) THEN f.fc END,
       f.fd,
       d.reason
FROM (
    SELECT session_id, connection_id,
           MIN(CASE WHEN type = 'connectionCreated' THEN position END) AS fc,
           MIN(CASE WHEN type = 'connectionDestroyed' THEN position END) AS fd
    FROM connection_ledger
    WHERE NOT default_prevented
    GROUP BY session_id, connection_id
) AS f
JOIN connection_ledger AS src
  ON src.position = CASE WHEN f.fc IS NOT NULL AND (f.fd IS NULL OR f.fc < f.fd)
                         THEN f.fc ELSE f.fd END
LEFT JOIN connection_ledger AS d ON d.position = f.fd
"""

REBUILD_SESSIONS = """
INSERT INTO projection_sessions (session_id, count)
SELECT session_id, SUM(CASE WHEN live THEN 1 ELSE 0 END)
FROM projection_connections
GROUP BY session_id
"""
