"""Ingest: records → decoded images → vectors → engine, with accounting."""
