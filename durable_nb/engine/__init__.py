"""Runs, step numbering, replay, retries: the durable semantics, as a client of the server."""
