"""How one query vector is searched in one generation's index, the way OpenSearch's k-NN
"efficient filtering" chooses: the filter has already become a set of positions; then

- HNSW: exact search over that set when scanning it costs less than a graph walk wide enough
  to find k of its members, else the graph walk restricted to the set (faiss
  ``SearchParameters.sel``) with efSearch widened by 1/selectivity;
- Qc (IVF): when the lists that hold the set's members are no more than the probe would walk
  (nprobes widened by 2/selectivity; all lists when the set is small), exactly those lists,
  which is exact over the members' int8 codes; else the widened probe restricted to the set;
- Linear, and Qc before training: exact over the set.

Whenever an approximate search finds fewer than min(k, members) hits, the answer is the exact
one, so a filtered query returns k hits whenever k documents match.
"""

from __future__ import annotations

import math

import numpy as np

from adapter.engines.faissindex import Selection, VectorIndex
from adapter.plan.tree import SearchParams

# Exact search over m vectors costs about m / EXACT_ROWS_PER_EF_UNIT as much as an HNSW walk at
# efSearch 1 costs per unit of ef: on 50k x 512-d clustered vectors, one thread, an exact scan of
# 5,000 selected vectors took 0.5 ms and a selector-restricted walk 3.1-3.8 us per unit of ef
# (ef 64: 0.2 ms, ef 1024: 3.9 ms). Both scale with the dimension, so the ratio holds across it.
EXACT_ROWS_PER_EF_UNIT = 32
# A filtered IVF search probes this many times nprobes/selectivity lists: the filtered top-k lie
# among the unfiltered top-k/selectivity, which spread over more lists than the top-k do. On 50k
# clustered 512-d vectors (894 lists, nprobes 16, 10 % selected): x1 recall 0.884 in 0.24 ms,
# x2 0.992 in 0.51 ms (unfiltered: 0.986 in 0.14 ms).
IVF_WIDENING = 2


def search_vector(index: VectorIndex, query: np.ndarray, k: int, selection: Selection | None,
                  params: SearchParams, filtered: bool, brute_force_threshold: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores) best first, at most k. ``selection``: the positions allowed (None: all)."""
    if selection is None:
        members, fraction = index.rows.live_count, 1.0
    else:
        members, fraction = selection.count, selection.fraction
    if members == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    want = min(k, members)  # fewer found than this: the approximate search ran dry
    small = brute_force_threshold is not None and members <= brute_force_threshold
    if index.quantized:
        nlist = index.nlist
        nprobes = params.nprobes or index.default_nprobes(params.scan_ratio)
        if small:
            nprobes = nlist
        elif selection is not None:  # a filter, or dead positions to hide
            nprobes = min(nlist, math.ceil((IVF_WIDENING if filtered else 1) * nprobes / fraction))
        if selection is not None and (filtered or small):
            lists = index.member_lists(selection)
            if len(lists) <= nprobes:  # no more lists than the probe would walk, and every member in them
                return _found(*index.search_lists(query, k, selection, lists))
        scores, found = index.search(query, k, selection, nprobes=nprobes)
        if found[want - 1] < 0 and nprobes < nlist:
            scores, found = index.search(query, k, selection, nprobes=nlist)  # all lists: every member
        return _found(scores, found)
    if index.family == "hnsw" and not params.exact:
        ef = max(k, params.ef_search or index.default_ef)
        if fraction < 1.0:
            ef = math.ceil(ef / fraction)
        if not (small or (filtered and members <= EXACT_ROWS_PER_EF_UNIT * ef)):
            scores, found = index.search(query, k, selection, ef_search=min(ef, index.rows.n))
            if found[want - 1] >= 0:
                return _found(scores, found)
    scores, found = index.exact(query, k, selection)
    return _found(scores, found)


def _found(scores: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if found[-1] >= 0:  # usually every slot is filled
        return found, scores
    keep = found >= 0
    return found[keep], scores[keep]
