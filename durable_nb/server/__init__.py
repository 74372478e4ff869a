"""The journal server: the one process that owns the DuckDB file, and its client."""

from durable_nb.server.client import JournalClient, default_client, reset_default_client

__all__ = ["JournalClient", "default_client", "reset_default_client"]
