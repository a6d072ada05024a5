"""HA3-compatible HTTP service."""
