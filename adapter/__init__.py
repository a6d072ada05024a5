"""HA3 image search on OpenSearch (or an embedded faiss + SQLite engine)."""

__version__ = "0.1.0"
