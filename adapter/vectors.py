"""The one rule for numbers that reach the vector index: vectors and scores.

faiss computes squared L2 distances and inner products in float32. A component of 3e38 is
a valid float32, but its square is not: k-means training then meets infinite distances and
aborts the whole process ("invalid cluster assignment"), and a search returns an infinite
score that JSON cannot carry. So a vector must be finite AND its L2 norm at most
``MAX_NORM``: for any two such vectors ``|a-b|^2 <= (|a|+|b|)^2 <= 4e36`` and
``|a.b| <= 1e36``, far inside float32's 3.4e38. Real embeddings have norms near 1.

Checks run in float64 on the values as sent, before any float32 cast (which would turn
1e39 into infinity and hide what the client wrote).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_NORM = 1e18
FLOAT32_MAX = float(np.finfo(np.float32).max)


def vectors_problem(values: np.ndarray) -> str | None:
    """Why these vectors (rows of a 2-D array, or one 1-D vector) cannot be stored or
    searched, or None when they can."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None
    if not np.isfinite(arr).all():
        return "holds NaN or infinity"
    with np.errstate(over="ignore"):
        norms = np.sqrt(np.einsum("...i,...i->...", arr, arr))
    if not (norms <= MAX_NORM).all():
        return (f"has an L2 norm over {MAX_NORM:g} (distances to it would overflow float32); "
                "send normalised embeddings")
    return None


def usable_rows(vectors: np.ndarray) -> np.ndarray:
    """The rows of a 2-D array that pass ``vectors_problem`` (a guard in front of faiss
    training for data stored before this rule existed)."""
    arr = np.asarray(vectors, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", arr, arr))
    return np.asarray(vectors)[np.isfinite(norms) & (norms <= MAX_NORM)]


def to_vector(values: Any, dimension: int | None = None) -> np.ndarray:
    """A contiguous float32 vector from a list/array of numbers; ValueError saying why not."""
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("vector holds non-numbers") from None
    if dimension is not None and arr.shape[0] != dimension:
        raise ValueError(f"vector has {arr.shape[0]} values, the table's dimension is {dimension}")
    problem = vectors_problem(arr)
    if problem:
        raise ValueError(f"vector {problem}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def score_problem(value: float) -> str | None:
    """Why a score-like number (threshold, weight) is unusable, or None."""
    if not np.isfinite(value):
        return "must be a finite number"
    if abs(value) > FLOAT32_MAX:
        return f"must be within float32 range (|x| <= {FLOAT32_MAX:.4g})"
    return None


def float32_score(value: float) -> float:
    """Pydantic after-validator form of ``score_problem``."""
    problem = score_problem(value)
    if problem:
        raise ValueError(problem)
    return value
