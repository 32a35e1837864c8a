"""The immutable ledger: tables, the append path, and reading by position."""
