"""Every NATS subject and header name of the service's interface, in one place: ingest, the
relay, the responders and the generated AsyncAPI document all take them from here. Pure."""

from __future__ import annotations

__all__ = [
    "CONNECTIONS_FILTER",
    "CONSUMER_LEADER_ELECTED",
    "HEAD",
    "HEADER_EXPECTED_LAST_MSG_ID",
    "HEADER_IMPORT_LINE",
    "HEADER_IMPORT_SOURCE",
    "HEADER_MSG_ID",
    "HEADER_RAW_TRUNCATED",
    "HEADER_REJECT_CODE",
    "HEADER_REJECT_MESSAGE",
    "HEADER_REPLAY_END",
    "HEADER_REPLAY_ERROR",
    "HEADER_SUBJECT",
    "QUEUE_GROUP",
    "RECORDS_FILTER",
    "REJECTED",
    "REPLAY",
    "SESSION_CONNECTIONS",
    "SESSION_COUNT",
    "SESSION_USAGE",
    "STREAM_LEADER_ELECTED",
    "event_subject",
    "record_subject",
    "rejected_subject",
]

# Events in: `<prefix>.<sessionId>.<type>` on the CONNECTIONS stream (the prefix is
# LEDGER_SUBJECT_PREFIX, `connections` unless set).
CONNECTIONS_FILTER = "{prefix}.>"

# Records out, on the LEDGER stream, one per ledger row in position order.
RECORDS_FILTER = "ledger.records.>"
# Rejected input, on core NATS, one message per rejection as it is stored.
REJECTED = "ledger.rejected.{code}"
# The ledger's head after a commit that appended something: a hint, at most once.
HEAD = "ledger.head"

# Request/reply, answered by every instance in one queue group (one answer per request).
SESSION_COUNT = "ledger.sessions.{session_id}.count"
SESSION_CONNECTIONS = "ledger.sessions.{session_id}.connections"
SESSION_USAGE = "ledger.sessions.{session_id}.usage"
REPLAY = "ledger.replay"
QUEUE_GROUP = "connection-ledger"
# JetStream's advisory, from the new leader, after a stream's leader election.
STREAM_LEADER_ELECTED = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{stream}"
CONSUMER_LEADER_ELECTED = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{stream}.{consumer}"

# JetStream's headers.
HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
# A rejection's.
HEADER_REJECT_CODE = "Ledger-Reject-Code"
HEADER_REJECT_MESSAGE = "Ledger-Reject-Message"
HEADER_SUBJECT = "Ledger-Subject"
HEADER_RAW_TRUNCATED = "Ledger-Raw-Truncated"
# A replay's end marker.
HEADER_REPLAY_END = "Ledger-Replay-End"
HEADER_REPLAY_ERROR = "Ledger-Replay-Error"
# Where `connledger import` read an event (stored with the event's rejection, if any).
HEADER_IMPORT_SOURCE = "Ledger-Import-Source"
HEADER_IMPORT_LINE = "Ledger-Import-Line"


def event_subject(prefix: str, session_id: str, type_: str) -> str:
    return f"{prefix}.{session_id}.{type_}"


def record_subject(session_id: str, type_: str) -> str:
    return f"ledger.records.{session_id}.{type_}"


def rejected_subject(code: str) -> str:
    return REJECTED.format(code=code)
