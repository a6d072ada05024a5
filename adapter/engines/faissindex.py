"""The faiss side of one embedded-engine generation: the same index families as OpenSearch's
faiss engine, addressed by faiss's own positions (0, 1, 2, ... in the order vectors were added).

- HNSW / QGraph → ``IndexHNSWFlat`` (M = spec.hnsw_m(), efConstruction, efSearch).
- Qc → ``IndexIVFScalarQuantizer`` with ``QT_8bit`` (int8 codes), nlist from spec.ivf_nlist,
  nprobes from spec.ivf_nprobes. Until it is trained (HA3 brute-forces below
  linear_build_threshold too) the vectors live in an ``IndexFlat`` and are searched exactly.
- Linear → ``IndexFlat``: exact.

No family ever removes a vector: a replaced or deleted row becomes a dead position in the row
table (rowtable.py), which a selector hides from every search; the generation rebuilds the
index when dead positions pass 30 %. So positions never shift, and the row table maps each to
its SQLite ``_id`` and primary key in numpy.

On disk (``to_file``): a JSON header, the positions' SQLite ids, then the faiss index, written
through faiss's IO callbacks straight into the file (no second in-memory copy).
"""

from __future__ import annotations

import json
import struct
from typing import IO, Any

import faiss
import numpy as np

from adapter.engines.rowtable import RowTable
from adapter.schema.model import DistanceType, TableSpec, VectorIndexType
from adapter.vectors import usable_rows

TOMBSTONE_REBUILD_FRACTION = 0.3
FILE_FORMAT = 2


def metric_of(spec: TableSpec) -> int:
    return faiss.METRIC_INNER_PRODUCT if spec.distance is DistanceType.INNER_PRODUCT else faiss.METRIC_L2


def family_of(spec: TableSpec) -> str:
    kind = spec.vector_index.index_type
    if kind is VectorIndexType.QC:
        return "ivf_sq8"
    if kind is VectorIndexType.LINEAR:
        return "flat"
    return "hnsw"  # HNSW, and QGraph (HNSW + quantizer; stored unquantized here)


class Selection:
    """The positions one search may return: a boolean mask, its count, and the faiss selector
    over it. Shared by concurrent searches (cached per row-table version), so the selector and
    the bitmap it points into are built once, up front: a lazily built pair could be replaced
    by a racing search and freed under the other's feet."""

    __slots__ = ("mask", "count", "_positions", "_bitmap", "selector", "params", "member_lists")

    def __init__(self, mask: np.ndarray, count: int | None = None):
        self.mask = mask
        self.count = int(np.count_nonzero(mask)) if count is None else count
        self._positions: np.ndarray | None = None
        self._bitmap = np.packbits(mask, bitorder="little")
        # positions past the bitmap (staged by a write in progress) are never members
        self.selector = faiss.IDSelectorBitmap(len(self._bitmap), faiss.swig_ptr(self._bitmap))
        self.params: dict[tuple, Any] = {}  # faiss SearchParameters using this selector, by setting
        self.member_lists: np.ndarray | None = None  # Qc: the IVF lists holding the members (VectorIndex)

    @property
    def fraction(self) -> float:
        return self.count / len(self.mask) if len(self.mask) else 0.0

    @property
    def positions(self) -> np.ndarray:
        if self._positions is None:  # a race only computes it twice
            self._positions = np.flatnonzero(self.mask).astype(np.int64)
        return self._positions


class VectorIndex:
    def __init__(self, spec: TableSpec, index: Any | None = None):
        self.spec = spec
        self.family = family_of(spec)
        self.metric = metric_of(spec)
        self.index = index if index is not None else self._empty()
        self.quantized = isinstance(self.index, faiss.IndexIVF)  # a trained Qc index: int8 codes only
        hnsw = spec.vector_index.hnsw
        self.default_ef = hnsw.ef_search if hnsw else 500
        self.rows = RowTable(spec)
        self._params: dict[tuple, Any] = {}  # SearchParameters without a selector, by setting
        self._storage: Any = None
        # Qc: each position's IVF list, in parts as add() assigned them (joined into one when a
        # search needs them); None: unknown (an index read from disk) until read from the lists.
        self._list_parts: list[np.ndarray] | None = None
        self._quantizer: Any = None

    # -- construction ----------------------------------------------------------------
    def _empty(self) -> Any:
        d = self.spec.dimension
        vi = self.spec.vector_index
        if self.family == "hnsw":
            hnsw = faiss.IndexHNSWFlat(d, vi.hnsw_m(), self.metric)
            hnsw.hnsw.efConstruction = vi.hnsw.ef_construction if vi.hnsw else 500
            hnsw.hnsw.efSearch = vi.hnsw.ef_search if vi.hnsw else 500
            return hnsw
        return faiss.IndexFlat(d, self.metric)  # Linear, and Qc until trained

    @property
    def is_trained(self) -> bool:
        return self.family != "ivf_sq8" or self.quantized

    @property
    def nlist(self) -> int | None:
        return int(self.index.nlist) if self.quantized else None

    @property
    def ntotal(self) -> int:
        """Live vectors."""
        return self.rows.live_count

    def train(self, sample: np.ndarray, doc_count: int | None = None) -> None:
        """Qc only, on an empty index: k-means on the sample; nlist from the spec, capped at sample/39."""
        if self.family != "ivf_sq8":
            return
        assert self.rows.n == 0, "train a fresh index, then add"
        # faiss k-means aborts the process on infinite distances; no row may bring them.
        sample = np.ascontiguousarray(usable_rows(sample), dtype=np.float32)
        if not len(sample):
            raise ValueError("no finite, bounded vectors to train the IVF index on")
        nlist = self.spec.vector_index.ivf_nlist(doc_count or len(sample))
        nlist = max(1, min(nlist, len(sample) // 39 or 1))
        d = self.spec.dimension
        quantizer = faiss.IndexFlat(d, self.metric)
        ivf = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, self.metric)
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index owns its quantizer now
        ivf.train(sample)
        self.index = ivf
        self.quantized = True
        self._params = {}
        self._list_parts, self._quantizer = [], None

    # -- writes (callers hold the generation's exclusive lock, or own a private index) ----------
    def add(self, ids: np.ndarray, vectors: np.ndarray, pks, values: dict) -> slice:
        """Append vectors at the next positions, staged (not live) in the row table."""
        if len(ids):
            x = np.ascontiguousarray(vectors, dtype=np.float32)
            if self.quantized:
                # The coarse assignment faiss's own add() computes, kept: it tells a filtered
                # search which lists hold the filter's members (search_lists).
                lists = self.index.quantizer.assign(x, 1).ravel()
                self.index.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(lists))
                if self._list_parts is not None:
                    self._list_parts.append(lists)
            else:
                self.index.add(x)
        return self.rows.stage(ids, pks, values)

    def needs_compaction(self) -> bool:
        return self.rows.n > 0 and self.rows.dead_count > TOMBSTONE_REBUILD_FRACTION * self.rows.n

    # -- search (callers hold the generation's read lock) ----------------------------------
    def live_selection(self) -> Selection | None:
        """None when every position is live (no selector needed), else the live positions."""
        rows = self.rows
        if rows.live_count == rows.n:  # rows.n is faiss's ntotal outside an exclusive add step
            return None
        return rows.cached("live", lambda: Selection(rows.live_mask().copy(), rows.live_count))

    def search(self, query: np.ndarray, k: int, selection: Selection | None, *,
               ef_search: int | None = None, nprobes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions) of one query through the index; position -1 pads."""
        if self.family == "hnsw":
            setting = ("ef", max(k, ef_search or self.default_ef))
        elif self.quantized:
            setting = ("nprobe", max(1, min(self.nlist, nprobes or self.default_nprobes())))
        else:
            setting = ("flat", 0)
        params = self._search_params(setting, selection)
        return self._run(self.index, query, k, params)

    def exact(self, query: np.ndarray, k: int, selection: Selection | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the stored fp32 vectors (not for a trained Qc index): the selected
        positions' vectors only when they are few, else one flat scan that skips the others."""
        storage = self._flat_storage()
        if selection is not None and selection.count * 2 < storage.ntotal:
            positions = selection.positions
            scores = np.empty((1, k), dtype=np.float32)
            found = np.empty((1, k), dtype=np.int64)
            by_index = (faiss.knn_inner_products_by_idx if self.metric == faiss.METRIC_INNER_PRODUCT
                        else faiss.knn_L2sqr_by_idx)
            by_index(faiss.swig_ptr(query), storage.get_xb(), faiss.swig_ptr(positions), storage.d, 1,
                     storage.ntotal, len(positions), k, faiss.swig_ptr(scores), faiss.swig_ptr(found), -1)
            return scores[0], found[0]
        return self._run(storage, query, k, self._search_params(("flat", 0), selection))

    def member_lists(self, selection: Selection) -> np.ndarray:
        """Qc: the IVF lists that hold the selection's members (sorted), cached with it."""
        lists = selection.member_lists
        if lists is None:
            held = np.zeros(self.index.nlist, dtype=bool)
            held[self._position_lists()[selection.positions]] = True
            lists = selection.member_lists = np.flatnonzero(held).astype(np.int64)
        return lists

    def search_lists(self, query: np.ndarray, k: int, selection: Selection, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Qc: (scores, positions) over every member of the selection, from their int8 codes,
        probing exactly the given lists (member_lists): what probing all lists would return,
        without walking the lists that hold no member."""
        nprobe = len(lists)
        coarse = np.empty(nprobe, dtype=np.float32)  # query-to-centroid, as the list scanners expect
        by_index = (faiss.fvec_inner_products_by_idx if self.metric == faiss.METRIC_INNER_PRODUCT
                    else faiss.fvec_L2sqr_by_idx)
        by_index(faiss.swig_ptr(coarse), faiss.swig_ptr(query), self._coarse_quantizer().get_xb(), faiss.swig_ptr(lists),
                 self.spec.dimension, 1, nprobe)
        params = self._search_params(("nprobe", nprobe), selection)
        scores = np.empty((1, k), dtype=np.float32)
        found = np.empty((1, k), dtype=np.int64)
        self.index.search_preassigned_c(1, faiss.swig_ptr(query), k, faiss.swig_ptr(lists), faiss.swig_ptr(coarse),
                                        faiss.swig_ptr(scores), faiss.swig_ptr(found), False, params, None)
        return scores[0], found[0]

    def _position_lists(self) -> np.ndarray:
        parts = self._list_parts
        if parts is not None and len(parts) == 1:
            return parts[0]
        if parts is None:  # read once from the inverted lists (an index loaded from disk)
            lists = np.empty(self.index.ntotal, dtype=np.int64)
            invlists = self.index.invlists
            for list_no in range(self.index.nlist):
                size = invlists.list_size(list_no)
                if size:
                    ids = invlists.get_ids(list_no)
                    lists[faiss.rev_swig_ptr(ids, size)] = list_no
                    invlists.release_ids(list_no, ids)
        else:
            lists = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        self._list_parts = [lists]  # searches racing here compute the same array
        return lists

    def _coarse_quantizer(self) -> Any:
        """The IVF index's flat quantizer (its centroids), as its own class."""
        if self._quantizer is None:
            self._quantizer = faiss.downcast_index(self.index.quantizer)
        return self._quantizer

    def _flat_storage(self) -> Any:
        if self._storage is None:
            self._storage = faiss.downcast_index(self.index.storage) if self.family == "hnsw" else self.index
        return self._storage

    def _search_params(self, setting: tuple, selection: Selection | None) -> Any:
        cache = self._params if selection is None else selection.params
        params = cache.get(setting)
        if params is None:
            kind, value = setting
            if kind == "ef":
                params = faiss.SearchParametersHNSW()
                params.efSearch = value
            elif kind == "nprobe":
                params = faiss.SearchParametersIVF()
                params.nprobe = value
            elif selection is not None:
                params = faiss.SearchParameters()
            if selection is not None:
                params.sel = selection.selector
            cache[setting] = params
        return params

    @staticmethod
    def _run(index: Any, query: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
        # search_c: faiss's own method under its numpy wrapper, minus the wrapper's checks
        scores = np.empty((1, k), dtype=np.float32)
        found = np.empty((1, k), dtype=np.int64)
        index.search_c(1, faiss.swig_ptr(query), k, faiss.swig_ptr(scores), faiss.swig_ptr(found), params)
        return scores[0], found[0]

    def default_nprobes(self, scan_ratio: float | None = None) -> int:
        return self.spec.vector_index.ivf_nprobes(self.nlist, self.ntotal or None, scan_ratio)

    # -- persistence ------------------------------------------------------------------
    def to_file(self, fh: IO[bytes], seq: int) -> None:
        n = self.rows.n
        header = json.dumps({"format": FILE_FORMAT, "seq": seq, "family": self.family, "positions": n}).encode()
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.write(self.rows.ids[:n].tobytes())
        faiss.write_index(self.index, faiss.PyCallbackIOWriter(fh.write))

    @classmethod
    def read_file(cls, spec: TableSpec, fh: IO[bytes]) -> tuple[Any, np.ndarray, int]:
        """(faiss index, SQLite id of each position, seq); ValueError if not ours or another family."""
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
        if header.get("format") != FILE_FORMAT or header.get("family") != family_of(spec):
            raise ValueError("index file of another format or family")
        n = int(header["positions"])
        ids = np.frombuffer(fh.read(8 * n), dtype=np.int64).copy()
        index = faiss.read_index(faiss.PyCallbackIOReader(fh.read))
        if index.ntotal != n or len(ids) != n:
            raise ValueError("index file truncated")
        return index, ids, int(header["seq"])
