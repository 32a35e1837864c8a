"""Realistic connection traffic: the generator (pure) and `connledger simulate`, which
publishes it to a running service."""
