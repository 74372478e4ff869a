"""Storage of the durable journal: schema, DuckDB store, payload codec, write-ahead segments."""
