"""The faiss side of one embedded-engine generation: the same index families as
OpenSearch's faiss engine, addressed by our int64 row ids.

- HNSW / QGraph → ``IndexIDMap2(IndexHNSWFlat)`` (M = spec.hnsw_m(), efConstruction, efSearch).
  HNSW graphs cannot drop nodes, so a replaced or deleted row becomes a tombstone that a
  selector hides from every search; the graph is rebuilt when tombstones pass 30 %.
- Qc → ``IndexIVFScalarQuantizer`` with ``QT_8bit`` (really int8 codes), nlist from
  spec.ivf_nlist, nprobes from spec.ivf_nprobes. It must be trained; until then the engine
  answers by exact search over SQLite (HA3 also brute-forces below linear_build_threshold).
- Linear → ``IndexIDMap2(IndexFlat)``: exact.

Row ids are SQLite ``docs.id`` values (AUTOINCREMENT, never reused), so a replaced document
gets a new id and the old one can never be confused with it.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import faiss
import numpy as np

from adapter.schema.model import DistanceType, TableSpec, VectorIndexType
from adapter.vectors import usable_rows

TOMBSTONE_REBUILD_FRACTION = 0.3


def metric_of(spec: TableSpec) -> int:
    return faiss.METRIC_INNER_PRODUCT if spec.distance is DistanceType.INNER_PRODUCT else faiss.METRIC_L2


def family_of(spec: TableSpec) -> str:
    kind = spec.vector_index.index_type
    if kind is VectorIndexType.QC:
        return "ivf_sq8"
    if kind is VectorIndexType.LINEAR:
        return "flat"
    return "hnsw"  # HNSW, and QGraph (HNSW + quantizer; stored unquantized here)


def _bitmap(ids: np.ndarray, size: int) -> np.ndarray:
    flags = np.zeros(size, dtype=np.uint8)
    flags[ids] = 1
    return np.packbits(flags, bitorder="little")


class VectorIndex:
    def __init__(self, spec: TableSpec, index: Any | None = None, dead: set[int] | None = None):
        self.spec = spec
        self.family = family_of(spec)
        self.metric = metric_of(spec)
        self.dead: set[int] = dead or set()
        self.index = index if index is not None else self._empty()

    # -- construction ----------------------------------------------------------------
    def _empty(self, nlist: int | None = None) -> Any:
        d = self.spec.dimension
        vi = self.spec.vector_index
        if self.family == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlat(d, self.metric))
        if self.family == "hnsw":
            hnsw = faiss.IndexHNSWFlat(d, vi.hnsw_m(), self.metric)
            hnsw.hnsw.efConstruction = vi.hnsw.ef_construction if vi.hnsw else 500
            hnsw.hnsw.efSearch = vi.hnsw.ef_search if vi.hnsw else 500
            return faiss.IndexIDMap2(hnsw)
        quantizer = faiss.IndexFlat(d, self.metric)
        ivf = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist or vi.ivf_nlist(None),
                                            faiss.ScalarQuantizer.QT_8bit, self.metric)
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index owns its quantizer now
        return ivf

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    @property
    def nlist(self) -> int | None:
        return int(self.index.nlist) if self.family == "ivf_sq8" else None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.dead)

    def train(self, sample: np.ndarray, doc_count: int | None = None) -> None:
        """IVF only: k-means on the sample; nlist from the spec, capped at sample/39."""
        if self.family != "ivf_sq8":
            return
        # faiss k-means aborts the process on infinite distances; no row may bring them.
        sample = np.ascontiguousarray(usable_rows(sample), dtype=np.float32)
        if not len(sample):
            raise ValueError("no finite, bounded vectors to train the IVF index on")
        nlist = self.spec.vector_index.ivf_nlist(doc_count or len(sample))
        nlist = max(1, min(nlist, len(sample) // 39 or 1))
        self.index = self._empty(nlist)
        self.index.train(sample)

    # -- writes ----------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                    np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        if self.family == "hnsw":
            self.dead.update(int(i) for i in ids)
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))

    def needs_compaction(self) -> bool:
        total = int(self.index.ntotal)
        return self.family == "hnsw" and total > 0 and len(self.dead) > TOMBSTONE_REBUILD_FRACTION * total

    def reset(self) -> None:
        """Empty index of the same geometry (keeps IVF training)."""
        if self.family == "ivf_sq8" and self.is_trained:
            self.index.reset()
        else:
            self.index = self._empty()
        self.dead = set()

    # -- search ----------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               max_id: int = 0, ef_search: int | None = None, nprobes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of shape (n, k); id -1 pads. ``allowed`` restricts to those row ids."""
        keep: list[Any] = []  # selectors and bitmaps must outlive the search call
        sel = None
        if allowed is not None:
            bitmap = _bitmap(allowed, max_id + 1)
            sel = faiss.IDSelectorBitmap(max_id + 1, faiss.swig_ptr(bitmap))
            keep += [bitmap, sel]
        elif self.dead:
            dead = np.fromiter(self.dead, dtype=np.int64, count=len(self.dead))
            bitmap = _bitmap(dead, int(dead.max()) + 1)
            inner = faiss.IDSelectorBitmap(int(dead.max()) + 1, faiss.swig_ptr(bitmap))
            sel = faiss.IDSelectorNot(inner)
            keep += [bitmap, inner, sel]
        if self.family == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(k, ef_search or self.default_ef())
        elif self.family == "ivf_sq8":
            params = faiss.SearchParametersIVF()
            params.nprobe = max(1, min(self.nlist, nprobes or self.default_nprobes()))
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        q = np.ascontiguousarray(queries, dtype=np.float32)
        scores, ids = self.index.search(q, k, params=params)
        del keep
        return scores, ids

    def default_ef(self) -> int:
        hnsw = self.spec.vector_index.hnsw
        return hnsw.ef_search if hnsw else 500

    def default_nprobes(self, scan_ratio: float | None = None) -> int:
        return self.spec.vector_index.ivf_nprobes(self.nlist, self.ntotal or None, scan_ratio)

    # -- persistence ------------------------------------------------------------------
    def to_bytes(self, seq: int) -> bytes:
        header = json.dumps({"seq": seq, "family": self.family, "dead": sorted(self.dead)}).encode()
        body = faiss.serialize_index(self.index).tobytes()
        return struct.pack("<Q", len(header)) + header + body

    @classmethod
    def from_bytes(cls, spec: TableSpec, data: bytes) -> tuple["VectorIndex", int]:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        if header.get("family") != family_of(spec):
            raise ValueError("index family changed")
        index = faiss.deserialize_index(np.frombuffer(data[8 + n:], dtype=np.uint8))
        return cls(spec, index, set(header.get("dead", []))), int(header["seq"])
