"""The neutral middle: what parsers produce and engines and formatters consume.

``tree``: SearchPlan, FetchPlan, AggregatePlan and the filter expression tree.
``records``: Document (into engines), Hit/SearchResult (out of them), write reports.
``engine``: the Engine protocol both engines implement.

Like sqlglot's expression tree, nothing here knows a syntax: no HA3 string is parsed and
no engine request is built in this package, and it imports nothing from ``query`` or
``engines`` (tests/test_import_direction.py holds it to that).
"""
