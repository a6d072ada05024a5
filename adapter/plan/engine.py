"""The engine protocol: what both engines (embedded, OpenSearch) implement identically.

Scores leave engines in HA3 ``proxima_score`` semantics: squared L2 (lower is better) for
SquaredEuclidean, raw inner product (higher is better) for InnerProduct. Formatters never
convert.

Generations: a table is what readers see; behind it sits one live generation. A rebuild
calls ``begin_generation`` (a fresh, empty copy of the table's structure), writes into it
with ``upsert(..., generation=gen)``, then ``switch_generation`` atomically points readers
at it and drops the old one. ``abort_generation`` throws a half-built one away.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from adapter.plan.records import Document, Hit, SearchResult, TableStats, WriteResult
from adapter.plan.tree import AggregatePlan, FetchPlan, FilterExpr, SearchPlan
from adapter.schema.model import TableSpec


@runtime_checkable
class Engine(Protocol):
    """Both engines implement exactly this. Methods raise adapter.errors.* on bad input."""

    # -- tables ------------------------------------------------------------------------
    def create_table(self, spec: TableSpec) -> None:
        """Create a table with its first (live) generation. ConflictError if it exists."""

    def drop_table(self, table: str) -> None:
        """Drop a table and every generation. NotFoundError if missing."""

    def list_tables(self) -> list[str]: ...

    def get_spec(self, table: str) -> TableSpec:
        """The spec a table was created with (credentials stripped). NotFoundError if missing."""

    # -- writes ------------------------------------------------------------------------
    def upsert(self, table: str, docs: Sequence[Document], *, generation: str | None = None) -> WriteResult:
        """Add or replace by primary key. A bad document fails alone, reported with its key."""

    def delete(self, table: str, pks: Sequence[Any], *, generation: str | None = None) -> WriteResult:
        """Delete by primary key; a missing key is not an error."""

    def train(self, table: str, sample: np.ndarray, *, generation: str | None = None,
              doc_count: int | None = None) -> None:
        """Train a Qc (IVF) index on sample vectors before bulk writes; no-op for others.
        ``doc_count``: the documents the generation will hold (a rebuild knows); below the
        schema's linear_build_threshold nothing is trained and the table is searched exactly
        (``VectorIndexSpec.trains_ivf``). None trains as asked."""

    # -- reads -------------------------------------------------------------------------
    def get(self, table: str, pks: Sequence[Any], *, output_fields: list[str] | None = None,
            include_vector: bool = False) -> list[Hit]:
        """Documents by key, in the order asked, missing keys skipped."""

    def search(self, plan: SearchPlan) -> SearchResult:
        """k-NN (or exact) search; ``plan.vectors`` must be set."""

    def fetch(self, plan: FetchPlan) -> SearchResult:
        """By ids, or by filter with sort/limit/offset; scores are None."""

    def count(self, table: str, filter: FilterExpr | None = None) -> int: ...

    def aggregate(self, plan: AggregatePlan) -> list[dict[str, Any]]:
        """Groups: ``[{"key": {field: value, ...}, "values": {label: number}}, ...]``."""

    def stats(self, table: str) -> TableStats: ...

    # -- generations -------------------------------------------------------------------
    def begin_generation(self, table: str, spec: TableSpec | None = None) -> str:
        """A new empty generation (optionally with a changed spec); returns its id."""

    def switch_generation(self, table: str, generation: str) -> None:
        """Atomically make ``generation`` live; the previous one is dropped."""

    def abort_generation(self, table: str, generation: str) -> None: ...

    def generations(self, table: str) -> list[dict[str, Any]]:
        """``[{"generation": id, "live": bool, "doc_count": n, "created": iso8601}, ...]``."""

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "unavailable", ...}``, answered fast (for /health)."""
        ...

    def close(self) -> None: ...
