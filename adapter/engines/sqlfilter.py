"""Filter tree → SQLite WHERE clause for the embedded engine, validated against the TableSpec.

Values travel as bound parameters (never spliced into SQL); column names come only from
the TableSpec and are quoted. Multi-value fields hold JSON arrays and match when ANY
element matches (``!=`` and ``notin`` then mean "no element equals").
"""

from __future__ import annotations

from typing import Any

from adapter.errors import QueryError
from adapter.plan.tree import And, Compare, FilterExpr, InList, Not, Or
from adapter.schema.model import FieldSpec, FieldType, TableSpec
from adapter.values import literal_value


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def attribute_field(spec: TableSpec, name: str, what: str = "filter") -> FieldSpec:
    """The attribute FieldSpec named ``name``, or a QueryError naming it."""
    field = spec.field(name)
    if field is None or name == spec.vector_field:
        known = ", ".join(f.name for f in spec.attribute_fields)
        raise QueryError(f"unknown field '{name}' in {what} for table '{spec.name}' (known: {known})",
                         location=f"{what}.{name}")
    return field


class SqlFilter:
    """Compiles one filter tree; ``sql`` and ``params`` are ready for ``WHERE``."""

    def __init__(self, spec: TableSpec, expr: FilterExpr | None):
        self.spec = spec
        self.params: list[Any] = []
        self.sql = self._compile(expr) if expr is not None else "1"

    def _compile(self, expr: FilterExpr) -> str:
        if isinstance(expr, Compare):
            field = attribute_field(self.spec, expr.field)
            value = literal_value(field, expr.value, f"filter.{expr.field}")
            if field.multi_value:
                if expr.op == "!=":
                    return self._any(field, "= ?", [value], negate=True)
                return self._any(field, f"{expr.op} ?", [value])
            self.params.append(value)
            return f"{quote_ident(field.name)} {expr.op} ?"
        if isinstance(expr, InList):
            field = attribute_field(self.spec, expr.field)
            if not expr.values:  # notin(nothing): every document that has the field
                return f"{quote_ident(field.name)} IS NOT NULL" if expr.negate else "0"
            values = [literal_value(field, v, f"filter.{expr.field}") for v in expr.values]
            marks = ", ".join("?" for _ in values)
            if field.multi_value:
                return self._any(field, f"IN ({marks})", values, negate=expr.negate)
            self.params.extend(values)
            col = quote_ident(field.name)
            # NOT IN on NULL is NULL (no match), like HA3 where a missing attribute never matches.
            return f"{col} {'NOT IN' if expr.negate else 'IN'} ({marks})"
        if isinstance(expr, And):
            return "(" + " AND ".join(self._compile(i) for i in expr.items) + ")" if expr.items else "1"
        if isinstance(expr, Or):
            return "(" + " OR ".join(self._compile(i) for i in expr.items) + ")" if expr.items else "0"
        if isinstance(expr, Not):
            return f"(NOT COALESCE({self._compile(expr.item)}, 0))"
        raise QueryError(f"unsupported filter node {type(expr).__name__}")

    def _any(self, field: FieldSpec, cond: str, values: list[Any], negate: bool = False) -> str:
        self.params.extend(values)
        sql = f"EXISTS (SELECT 1 FROM json_each({quote_ident(field.name)}) WHERE value {cond})"
        return f"(NOT {sql})" if negate else sql


def column_type(field: FieldSpec) -> str:
    if field.multi_value:
        return "TEXT"  # JSON array
    if field.type.is_integer:
        return "INTEGER"
    if field.type in (FieldType.FLOAT, FieldType.DOUBLE):
        return "REAL"
    return "TEXT"
