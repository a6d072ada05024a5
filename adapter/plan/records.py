"""What crosses the engine boundary besides plans: documents in, hits and write reports out.

Scores leave engines in HA3 ``proxima_score`` semantics: squared L2 (lower is better) for
SquaredEuclidean, raw inner product (higher is better) for InnerProduct. Formatters never
convert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Document:
    """One record to store: primary key, attribute values, and its vector."""

    pk: Any
    fields: dict[str, Any]  # attribute values by field name (pk included or not: engines add it)
    vector: np.ndarray  # float32, shape (dimension,)


@dataclass
class Hit:
    pk: Any
    score: float | None  # proxima_score; None for fetches without a query vector
    fields: dict[str, Any] = field(default_factory=dict)
    vector: list[float] | None = None


@dataclass
class SearchResult:
    hits: list[Hit]  # already merged, sorted, thresholded and paged
    total: int  # hits before paging (HA3 totalHits)
    searched_docs: int | None = None  # documents visible to the search, when known


@dataclass
class WriteFailure:
    pk: Any
    reason: str


@dataclass
class WriteResult:
    written: int = 0
    failures: list[WriteFailure] = field(default_factory=list)


@dataclass
class TableStats:
    table: str
    doc_count: int
    generation: str
    index_type: str
    extra: dict[str, Any] = field(default_factory=dict)
