"""Garbage for the garbage scenarios: mutated envelopes, and entries written straight into
the Redis broker's keys and the SQLite broker's table."""
