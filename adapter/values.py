"""Typed field values: every rule that turns a value into a field's Python type lives here.

Three readers, three rules, one place:

- ``source_value``: what ingest reads (table cells and pushed fields): text is parsed
  (``"42"``, ``"4.0"`` for integers), multi-value fields split HA3's ``\\x1d`` format, a JSON
  list or commas. Push and rebuild give engines only documents typed by it.
- ``stored_value`` / ``stored_scalar``: what engines store: typed values, checked against the
  storage ranges (int64, float32), so a document that skipped ingest fails alone, not the batch.
- ``literal_value``: filter literals compared with a field (``"5"`` against INT64 is 5;
  5.5 against an integer field compares numerically).
"""

from __future__ import annotations

import json
import math
from typing import Any

from adapter.errors import QueryError
from adapter.schema.model import FieldSpec, FieldType
from adapter.vectors import FLOAT32_MAX

MULTI_VALUE_SEPARATOR = "\x1d"  # HA3's multi-value separator in text
INT64_RANGE = (-(2**63), 2**63 - 1)  # what both engines store (SQLite INTEGER, OpenSearch long)


# -- ingest: values as tables and pushes give them ------------------------------------

def source_value(value: Any, field: FieldSpec) -> Any:
    """One raw value from a table or a push (text, numbers, HA3's ``\\x1d``-joined or JSON lists)
    → the FieldType's Python value (list for multi_value). ValueError if not."""
    if field.multi_value:
        items = _split_multi(value)
        return [_coerce_scalar(item, field.type) for item in items]
    return _coerce_scalar(value, field.type)


def _split_multi(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist"):
        return list(value.tolist())
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            parsed = json.loads(text)
            if isinstance(parsed, list):
                return parsed
        except json.JSONDecodeError:
            pass
    separator = MULTI_VALUE_SEPARATOR if MULTI_VALUE_SEPARATOR in text else ","
    return [part.strip() for part in text.split(separator)]


def _shown(value: Any, limit: int = 40) -> str:
    """A bad value as an error message quotes it: short, so that a report or task status
    names the culprit without carrying a file's contents."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _coerce_scalar(value: Any, type_: FieldType) -> Any:
    if type_.is_integer:
        if isinstance(value, bool):
            raise ValueError(f"{_shown(value)} is not an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{_shown(value)} is not an integer")
            number = int(value)
        else:
            text = str(value).strip()
            try:
                number = int(text)
            except ValueError:
                try:
                    as_float = float(text)
                except ValueError:
                    raise ValueError(f"{_shown(value)} is not an integer") from None
                if not as_float.is_integer():
                    raise ValueError(f"{_shown(value)} is not an integer") from None
                number = int(as_float)
        low, high = type_.int_range
        if not low <= number <= high:
            raise ValueError(f"{number} is out of range for {type_.value}")
        return number
    if type_ in (FieldType.FLOAT, FieldType.DOUBLE):
        if isinstance(value, bool):
            raise ValueError(f"{_shown(value)} is not a number")
        try:
            number = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
        except ValueError:
            raise ValueError(f"{_shown(value)} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{_shown(value)} is not a finite number")
        return number
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


# -- engines: typed values, checked for storage -----------------------------------------

def stored_scalar(field: FieldSpec, value: Any) -> Any:
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


def stored_value(field: FieldSpec, value: Any) -> Any:
    """A typed document value checked for storage: a scalar, or a list for multi-value fields
    (one value given alone is a list of one; HA3's text formats are read by ``source_value``)."""
    if value is None:
        return None
    if field.multi_value:
        items = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
        return [stored_scalar(field, v) for v in items]
    return stored_scalar(field, value)


# -- queries: filter literals -------------------------------------------------------------

def literal_value(field: FieldSpec, value: Any, where: str) -> Any:
    """A query literal in the field's type (``"5"`` against INT64 → 5); QueryError if impossible
    (a number SQLite cannot bind included)."""
    try:
        if field.type.is_integer:
            if isinstance(value, float) and not value.is_integer():
                return value  # 5.5 against an int column: compare numerically, no truncation
            number = int(value) if not isinstance(value, str) else int(float(value)) if "." in value else int(value)
            if not INT64_RANGE[0] <= number <= INT64_RANGE[1]:
                raise QueryError(f"value {number} is out of range for field '{field.name}' ({field.type.value})",
                                 location=where)
            return number
        if field.type.is_numeric:
            return float(value)
    except (TypeError, ValueError, OverflowError):
        raise QueryError(f"value {value!r} is not a number, but field '{field.name}' is {field.type.value}",
                         location=where) from None
    return str(value)
