"""Data sources: object stores and tables that yield records."""
