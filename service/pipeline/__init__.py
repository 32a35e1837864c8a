"""The application layer every edge calls: the write pipeline (decode, validate, dedupe, hooks,
append) and the read side (session queries, the in-memory live counts)."""
