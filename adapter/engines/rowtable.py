"""What a search needs to know about each faiss position, in numpy, without asking SQLite.

A generation's faiss index numbers its vectors 0, 1, 2, ... in the order they were added (its
positions). For each position the row table keeps the SQLite ``_id`` (ascending: ids are
AUTOINCREMENT and rows are added in id order), the primary key, whether the row is live (a
replaced or deleted row stays in faiss as a dead position until the index is rebuilt), and
the values of the small scalar fields that filters read (numeric, single-valued).

A write first *stages* its rows (appended, not yet live), then *publishes* them together with
the deaths of the rows it replaced, in one step under the generation's exclusive lock, so a
search sees a write whole or not at all. ``version`` changes at every publish: cached filter
results and selectors are tagged with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from adapter.schema.model import FieldSpec, TableSpec

INITIAL_CAPACITY = 1024
CACHED_RESULTS = 32  # filters (and the live set) kept per version: a mask + bitmap of n/8 bytes each


def memory_columns(spec: TableSpec) -> list[FieldSpec]:
    """Fields filters can evaluate in memory: numeric and single-valued (the pk is kept anyway)."""
    return [f for f in spec.attribute_fields
            if f.type.is_numeric and not f.multi_value and f.name != spec.primary_key]


def _dtype(field: FieldSpec) -> np.dtype:
    return np.dtype(np.int64 if field.type.is_integer else np.float64)


@dataclass
class Column:
    values: np.ndarray
    present: np.ndarray  # False where the document has no value (SQL NULL)


class RowTable:
    def __init__(self, spec: TableSpec):
        pk_field = spec.field(spec.primary_key)
        self.pk_is_integer = pk_field.type.is_integer
        self.n = 0  # positions recorded (staged or published)
        self.live_count = 0
        self.version = 0
        self.ids = np.empty(0, dtype=np.int64)
        self.pks = np.empty(0, dtype=np.int64 if self.pk_is_integer else object)
        self.live = np.zeros(0, dtype=bool)
        self.columns = {f.name: Column(np.empty(0, dtype=_dtype(f)), np.zeros(0, dtype=bool))
                        for f in memory_columns(spec)}
        self.pk_name = spec.primary_key
        self.cache: dict[Any, Any] = {}  # per-version results (filters, selectors); see cached()
        self._grow(INITIAL_CAPACITY)

    # -- writes (the caller holds the generation's exclusive lock, or owns a private table) ------
    def _grow(self, needed: int) -> None:
        capacity = len(self.ids)
        if needed <= capacity:
            return
        capacity = max(needed, 2 * capacity)

        def grown(a: np.ndarray) -> np.ndarray:
            out = np.zeros(capacity, dtype=a.dtype)
            out[:self.n] = a[:self.n]
            return out

        self.ids, self.pks, self.live = grown(self.ids), grown(self.pks), grown(self.live)
        for col in self.columns.values():
            col.values, col.present = grown(col.values), grown(col.present)

    def stage(self, ids: np.ndarray, pks: Sequence[Any], values: dict[str, Sequence[Any]]) -> slice:
        """Append rows, not yet live; ``values`` holds each memory column's values (None = NULL)."""
        start, stop = self.n, self.n + len(ids)
        self._grow(stop)
        self.ids[start:stop] = ids
        self.pks[start:stop] = pks
        for name, col in self.columns.items():
            column = values.get(name)
            if column is None:
                col.present[start:stop] = False
                continue
            present = np.fromiter((v is not None for v in column), dtype=bool, count=len(column))
            col.present[start:stop] = present
            col.values[start:stop] = [0 if v is None else v for v in column]
        self.n = stop
        return slice(start, stop)

    def publish(self, staged: slice | None, dead_ids: np.ndarray) -> None:
        """Make staged rows live and the rows with ``dead_ids`` dead, as one change."""
        if staged is not None:
            self.live[staged] = True
            self.live_count += staged.stop - staged.start
        dead = self.positions_of(dead_ids)
        dead = dead[self.live[dead]]
        self.live[dead] = False
        self.live_count -= len(dead)
        self.version += 1
        self.cache = {}

    # -- reads --------------------------------------------------------------------------------
    def positions_of(self, ids: np.ndarray) -> np.ndarray:
        """Positions holding these SQLite ids (ids not in the table are skipped)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids) or not self.n:
            return np.empty(0, dtype=np.int64)
        known = self.ids[:self.n]
        at = np.minimum(np.searchsorted(known, ids), self.n - 1)
        return at[known[at] == ids]

    def last_id(self) -> int:
        return int(self.ids[self.n - 1]) if self.n else 0

    @property
    def dead_count(self) -> int:
        return self.n - self.live_count

    def live_mask(self) -> np.ndarray:
        return self.live[:self.n]

    def column(self, name: str) -> Column | None:
        if name == self.pk_name and self.pk_is_integer:
            return Column(self.pks[:self.n], np.ones(self.n, dtype=bool))
        col = self.columns.get(name)
        return Column(col.values[:self.n], col.present[:self.n]) if col is not None else None

    def cached(self, key: Any, build) -> Any:
        """``build()`` once per version (publishes clear the cache); races only repeat work."""
        cache = self.cache
        hit = cache.get(key)
        if hit is None:
            hit = build()
            if len(cache) >= CACHED_RESULTS:
                cache.clear()
            cache[key] = hit
        return hit
