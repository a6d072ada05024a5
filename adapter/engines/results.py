"""Engine-neutral steps after the per-vector k-NN: merge, threshold, sort, page.

Both engines retrieve ``k`` neighbours per query vector, in proxima_score semantics, and
hand them here so that merging several query vectors, ``sf`` thresholds, sort keys and
start/hit paging behave identically whichever engine ran the search.

Sort semantics: ``RANK`` is relevance order. ``+RANK`` (``descending=False``, the default)
puts the best hit first for both metrics (smallest squared L2, largest inner product);
``-RANK`` reverses it. Attribute keys sort by value; missing values sort last.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import faiss
import numpy as np

from adapter.engines.sqlfilter import attribute_field
from adapter.errors import QueryError
from adapter.plan.tree import RANK, SearchPlan, SortKey
from adapter.schema.model import TableSpec
from adapter.vectors import MAX_NORM, vectors_problem

MAX_SQUARED_NORM = MAX_NORM * MAX_NORM


def merge_vectors(per_vector: Sequence[Iterable[tuple[Any, float]]], mode: str) -> dict[Any, float]:
    """pk → score across several query vectors: ``sum``, ``max`` or ``min`` of the raw scores."""
    merged: dict[Any, float] = {}
    for hits in per_vector:
        for key, score in hits:
            if key not in merged:
                merged[key] = float(score)
            elif mode == "sum":
                merged[key] += float(score)
            elif mode == "max":
                merged[key] = max(merged[key], float(score))
            else:
                merged[key] = min(merged[key], float(score))
    return merged


def passes_threshold(score: float, threshold: float | None, higher_is_better: bool) -> bool:
    """HA3 ``sf``: squared L2 above it is dropped; inner product below it is dropped."""
    if threshold is None:
        return True
    return score >= threshold if higher_is_better else score <= threshold


def sort_keys_fn(sort: Sequence[SortKey], higher_is_better: bool,
                 score_of: Callable[[Any], float | None],
                 value_of: Callable[[Any, str], Any]) -> Callable[[Any], tuple]:
    """A key function for ``sorted`` applying every sort key in turn (stable, mixed directions)."""

    def key(item: Any) -> tuple:
        parts: list[Any] = []
        for sk in sort:
            if sk.field == RANK:
                score = score_of(item)
                value = None if score is None else (-score if higher_is_better else score)
                descending = sk.descending
            else:
                value = value_of(item, sk.field)
                descending = sk.descending
            parts.append(_Ordered(value, descending))
        return tuple(parts)

    return key


class _Ordered:
    """Wraps a value so tuples compare per key direction, with None always last."""

    __slots__ = ("value", "descending")

    def __init__(self, value: Any, descending: bool):
        self.value = value
        self.descending = descending

    def __lt__(self, other: "_Ordered") -> bool:
        a, b = self.value, other.value
        if a is None or b is None:
            return a is not None and b is None
        if isinstance(a, list):
            a = a[0] if a else None
        if isinstance(b, list):
            b = b[0] if b else None
        if a is None or b is None:
            return a is not None and b is None
        try:
            return a > b if self.descending else a < b
        except TypeError:
            return (str(a) > str(b)) if self.descending else (str(a) < str(b))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Ordered) and self.value == other.value


def validate_output_fields(spec: TableSpec, output_fields: list[str] | None) -> tuple[list[str], bool]:
    """(attribute fields to return, whether the vector was named). QueryError on unknown names."""
    if output_fields is None:
        return [f.name for f in spec.attribute_fields], False
    names: list[str] = []
    wants_vector = False
    for name in output_fields:
        if name == spec.vector_field:
            wants_vector = True
            continue
        attribute_field(spec, name, "output_fields")
        if name not in names:
            names.append(name)
    return names, wants_vector


def validate_sort(spec: TableSpec, sort: Sequence[SortKey], allow_rank: bool = True) -> None:
    for sk in sort:
        if sk.field == RANK:
            if not allow_rank:
                raise QueryError("RANK cannot be sorted on without a query vector", location="sort.RANK")
            continue
        attribute_field(spec, sk.field, "sort")


MAX_K = 10000


def validate_search(spec: TableSpec, plan: SearchPlan) -> tuple[np.ndarray, list[str], bool]:
    """Checks every engine makes before searching: query vectors, k, paging, output fields
    and sort keys. Returns (query vectors, output fields, whether the vector is wanted)."""
    queries = query_vectors(spec, plan)
    if not 1 <= plan.k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {plan.k}", location="k")
    if plan.start < 0 or plan.hit < 0:
        raise QueryError("start and hit must not be negative", location="config")
    fields, wants_vector = validate_output_fields(spec, plan.output_fields)
    validate_sort(spec, plan.sort)
    return queries, fields, wants_vector


def query_vectors(spec: TableSpec, plan: SearchPlan) -> np.ndarray:
    """The plan's query vectors as (n, dimension) C-contiguous float32 (faiss reads rows in
    place); QueryError on a wrong shape or a vector the one vector rule refuses."""
    if len(plan.vectors) == 0:
        raise QueryError("search needs a query vector (or content to embed first)", location="vector")
    try:
        if isinstance(plan.vectors, np.ndarray) and plan.vectors.dtype == np.float32:
            queries = plan.vectors  # an embedder's output: already what faiss reads
        else:
            queries = np.asarray(plan.vectors, dtype=np.float64)  # checked as sent, before the float32 cast
    except (TypeError, ValueError):
        raise QueryError("query vectors must all have the same length", location="vector") from None
    if queries.ndim != 2 or queries.shape[1] != spec.dimension:
        got = queries.shape[-1] if queries.ndim == 2 else "ragged"
        raise QueryError(f"query vector has {got} values, table '{spec.name}' needs {spec.dimension}",
                         location="vector")
    problem = None if _within_rule_float32(queries) else vectors_problem(queries)
    if problem:
        raise QueryError(f"query vector {problem}", location="vector")
    return np.ascontiguousarray(queries, dtype=np.float32)


def _within_rule_float32(queries: np.ndarray) -> bool:
    """The vector rule's yes in one pass, for float32 input (every search's hot path): the sum
    of all squared components, over every row, bounds each row's squared norm, so a sum within
    MAX_NORM^2 clears them all. A NaN or infinite component, or a square past float32, makes
    the sum NaN or inf, which fails the comparison; a no (possibly several rows that pass one
    by one) goes to vectors_problem for the exact answer. faiss's SIMD kernel reads the array in
    place and, unlike numpy, keeps no floating-point error state to warn about overflow."""
    if queries.dtype != np.float32 or not queries.flags.c_contiguous:
        return False
    return bool(faiss.fvec_norm_L2sqr(faiss.swig_ptr(queries), queries.size) <= MAX_SQUARED_NORM)  # NaN: false
