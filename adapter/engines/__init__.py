"""Storage and search engines behind one protocol (engines.base.Engine)."""
