"""Filter tree → OpenSearch query DSL, with the same semantics as the embedded engine's SQL.

- ``=`` → term, ``< <= > >=`` → range, ``in`` → terms.
- ``!=`` and ``notin`` match documents that HAVE the field and no matching value (a missing
  attribute never matches a comparison, as in SQL and HA3); ``NOT`` is a plain must_not.
- Multi-value fields are arrays: a term matches when any element does.
"""

from __future__ import annotations

from typing import Any

from adapter.engines.sqlfilter import attribute_field
from adapter.errors import QueryError
from adapter.plan.tree import And, Compare, FilterExpr, InList, Not, Or
from adapter.schema.model import TableSpec
from adapter.values import literal_value

RANGE_OPS = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}


def filter_dsl(spec: TableSpec, expr: FilterExpr) -> dict[str, Any]:
    if isinstance(expr, Compare):
        field = attribute_field(spec, expr.field)
        value = literal_value(field, expr.value, f"filter.{expr.field}")
        if expr.op == "=":
            return {"term": {field.name: value}}
        if expr.op == "!=":
            return {"bool": {"filter": [{"exists": {"field": field.name}}],
                             "must_not": [{"term": {field.name: value}}]}}
        return {"range": {field.name: {RANGE_OPS[expr.op]: value}}}
    if isinstance(expr, InList):
        field = attribute_field(spec, expr.field)
        values = [literal_value(field, v, f"filter.{expr.field}") for v in expr.values]
        terms = {"terms": {field.name: values}}
        if not expr.negate:
            return terms
        return {"bool": {"filter": [{"exists": {"field": field.name}}], "must_not": [terms]}}
    if isinstance(expr, And):
        return {"bool": {"filter": [filter_dsl(spec, i) for i in expr.items]}}
    if isinstance(expr, Or):
        if not expr.items:
            return {"bool": {"must_not": [{"match_all": {}}]}}
        return {"bool": {"should": [filter_dsl(spec, i) for i in expr.items], "minimum_should_match": 1}}
    if isinstance(expr, Not):
        return {"bool": {"must_not": [filter_dsl(spec, expr.item)]}}
    raise QueryError(f"unsupported filter node {type(expr).__name__}")
