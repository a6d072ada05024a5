"""Document validation shared by both engines: one bad document fails alone, with a reason."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from adapter.plan.records import Document
from adapter.schema.model import FieldSpec, FieldType, TableSpec
from adapter.vectors import FLOAT32_MAX, to_vector


INT64_RANGE = (-(2**63), 2**63 - 1)  # what both engines store (SQLite INTEGER, OpenSearch long)


def scalar_value(field: FieldSpec, value: Any) -> Any:
    """One value in the field's type; ValueError naming the field if impossible (a value out
    of the type's range included: SQLite cannot bind it, OpenSearch would reject it)."""
    if isinstance(value, (list, tuple, dict)):
        raise ValueError(f"field '{field.name}' expects one {field.type.value} value, got {type(value).__name__}")
    try:
        if field.type.is_integer:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            number = int(value)
            low, high = field.type.int_range
            if not max(low, INT64_RANGE[0]) <= number <= min(high, INT64_RANGE[1]):
                raise ValueError
            return number
        if field.type.is_numeric:
            number = float(value)
            limit = FLOAT32_MAX if field.type is FieldType.FLOAT else math.inf
            if not math.isfinite(number) or abs(number) > limit:
                raise ValueError
            return number
    except (TypeError, ValueError, OverflowError):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ValueError(f"field '{field.name}' expects {field.type.value}, got {shown}") from None
    return str(value)


def field_value(field: FieldSpec, value: Any) -> Any:
    """A document value: scalar, or a list for multi-value fields (a string splits on HA3's \\x1d)."""
    if value is None:
        return None
    if field.multi_value:
        items = value.split("\x1d") if isinstance(value, str) else list(value)
        return [scalar_value(field, v) for v in items]
    return scalar_value(field, value)


def vector_value(spec: TableSpec, vector: Any) -> np.ndarray:
    if vector is None:
        raise ValueError(f"vector field '{spec.vector_field}' is missing")
    if isinstance(vector, str):
        try:
            vector = [float(x) for x in vector.split(spec.vector_index.embedding_delimiter) if x.strip()]
        except ValueError:
            raise ValueError(f"vector field '{spec.vector_field}' is not delimited numbers") from None
    arr = to_vector(vector)
    if arr.shape[0] != spec.dimension:
        raise ValueError(f"vector has {arr.shape[0]} values, table '{spec.name}' needs {spec.dimension}")
    return arr


def normalize_document(spec: TableSpec, doc: Document) -> tuple[Any, dict[str, Any], np.ndarray]:
    """(pk, {attribute: value} for every attribute field, vector). ValueError on bad input."""
    pk_field = spec.field(spec.primary_key)
    raw_pk = doc.pk if doc.pk is not None else doc.fields.get(spec.primary_key)
    if raw_pk is None:
        raise ValueError(f"primary key '{spec.primary_key}' is missing")
    pk = scalar_value(pk_field, raw_pk)
    unknown = [k for k in doc.fields if spec.field(k) is None]
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    values = {f.name: (pk if f.name == spec.primary_key else field_value(f, doc.fields.get(f.name)))
              for f in spec.attribute_fields}
    return pk, values, vector_value(spec, doc.vector)
