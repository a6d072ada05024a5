"""Storage and search engines behind one protocol (adapter.plan.engine.Engine)."""
