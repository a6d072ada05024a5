"""Filter tree → boolean mask over a row table's positions, from its in-memory columns.

Evaluates the same semantics as sqlfilter.py's SQL: a comparison with a missing value (NULL)
never matches, ``!=`` and ``notin`` included, and ``not`` turns "no match" into a match
(``NOT COALESCE(x, 0)``). Because NULL collapses to false before every negation, two-valued
logic over "matches" gives the SQL answer. Returns None when the filter reads a field that
has no in-memory column (strings, multi-valued fields): the caller asks SQLite instead.
"""

from __future__ import annotations

import operator

import numpy as np

from adapter.engines.rowtable import RowTable
from adapter.engines.sqlfilter import attribute_field
from adapter.plan.tree import And, Compare, FilterExpr, InList, Not, Or
from adapter.schema.model import TableSpec
from adapter.values import literal_value

COMPARE = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt,
           "<=": operator.le, ">=": operator.ge}


INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


class NotInMemory(Exception):
    """The filter needs a column the row table does not keep."""


def filter_mask(spec: TableSpec, rows: RowTable, expr: FilterExpr) -> np.ndarray | None:
    try:
        return _mask(spec, rows, expr)
    except NotInMemory:
        return None


def _values(spec: TableSpec, field_name: str, raw: list, where: str) -> list:
    field = attribute_field(spec, field_name)
    values = [literal_value(field, v, where) for v in raw]
    if field.type.is_integer and not all(isinstance(v, int) and INT64_MIN <= v <= INT64_MAX for v in values):
        raise NotInMemory  # int column vs 5.5 or 2**70: SQLite compares exactly, numpy might not
    return values


def _mask(spec: TableSpec, rows: RowTable, expr: FilterExpr) -> np.ndarray:
    if isinstance(expr, (Compare, InList)):
        column = rows.column(expr.field)
        if column is None:
            raise NotInMemory
        where = f"filter.{expr.field}"
        if isinstance(expr, Compare):
            [value] = _values(spec, expr.field, [expr.value], where)
            return COMPARE[expr.op](column.values, value) & column.present
        if not expr.values:  # in(nothing) matches nothing; notin(nothing) every present value
            return column.present.copy() if expr.negate else np.zeros(rows.n, dtype=bool)
        hit = np.isin(column.values, _values(spec, expr.field, list(expr.values), where))
        return (~hit if expr.negate else hit) & column.present
    if isinstance(expr, And):
        out = np.ones(rows.n, dtype=bool)
        for item in expr.items:
            out &= _mask(spec, rows, item)
        return out
    if isinstance(expr, Or):
        out = np.zeros(rows.n, dtype=bool)
        for item in expr.items:
            out |= _mask(spec, rows, item)
        return out
    if isinstance(expr, Not):
        return ~_mask(spec, rows, expr.item)
    raise NotInMemory
