"""Projections of the ledger: each session's live connection set and count."""
