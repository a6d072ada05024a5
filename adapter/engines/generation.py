"""One generation of one embedded table: a SQLite file (source of truth, docstore.py) + a
faiss index with its row table (faissindex.py, rowtable.py).

Crash safety: SQLite runs in WAL mode, so a write either commits or never happened. The
faiss file is replaced atomically (temp file + fsync + os.replace) at checkpoints; if its
seq differs from SQLite's on open (a crash since the last checkpoint), the index is rebuilt
from SQLite, so the previous committed state is always what readers see.

Concurrency, so that searches never wait behind writers' long work:

- ``writer`` (a mutex) orders writers, checkpoints and index swaps among themselves; searches
  never take it.
- ``rw`` (a fair readers-writer lock, rwlock.py) is held by searches for their whole read and
  by a writer only for short exclusive steps: each chunk of faiss adds (sized to take about
  EXCLUSIVE_STEP_S while searches are waiting), and the publish step that commits SQLite and
  makes the staged rows live at once. A search waits for at most one such step, and sees a
  write whole or not at all.
- Long work runs under no lock a search needs: the SQLite inserts of a batch (readers use
  their own WAL connections), serialising a checkpoint (faiss reads the index while searches
  read it too), and rebuilding the index (Qc training at linear_build_threshold, HNSW
  compaction past 30 % dead positions, explicit ``train``). A rebuild fills a fresh index
  from committed rows while writes go on into the live one, catches up with what they added
  and deleted, and swaps it in under one exclusive step.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from adapter.engines.docstore import DocStore
from adapter.engines.faissindex import VectorIndex
from adapter.engines.rowtable import memory_columns
from adapter.engines.rwlock import RWLock
from adapter.schema.model import TableSpec

EXCLUSIVE_STEP_S = 0.001  # how long a chunk of faiss adds may keep waiting searches waiting
UNCONTENDED_STEP_S = 0.064  # ... and how long it may grow while no search has had to wait
CATCH_UP_UNDER_LOCK = 2000  # a rebuild swaps in once fewer new rows than this remain to add


class _ChunkSizer:
    """Vectors per exclusive add step, from the measured add rate (HNSW: ~0.1-3 ms a vector).
    The step doubles, up to UNCONTENDED_STEP_S, while no search waits for it (bulk loads keep
    faiss's batches large: 50k 512-d vectors took 17 s through upsert with steps capped at
    16 ms, 12 s at 64 ms, 8.5 s at 0.5 s) and drops back to EXCLUSIVE_STEP_S as soon as one
    does. A generation searches do not read (one a rebuild is filling) adds whole batches."""

    def __init__(self) -> None:
        self.seconds_per_vector = 0.0005
        self.step_s = EXCLUSIVE_STEP_S

    def size(self, serving: bool) -> int:
        if not serving:
            return 1 << 30
        return int(min(8192, max(1, self.step_s / self.seconds_per_vector)))

    def observe(self, vectors: int, seconds: float, searches_waited: bool) -> None:
        self.seconds_per_vector = 0.5 * self.seconds_per_vector + 0.5 * max(seconds / vectors, 1e-8)
        self.step_s = EXCLUSIVE_STEP_S if searches_waited else min(UNCONTENDED_STEP_S, 2 * self.step_s)


class Closed(Exception):
    """The generation was closed (switched away, aborted, dropped) while work was under way."""


class Generation:
    def __init__(self, table: str, gen: str, spec: TableSpec, path: Path):
        self.table, self.gen, self.spec, self.path = table, gen, spec, path
        path.mkdir(parents=True, exist_ok=True)
        self.docs = DocStore(spec, path)
        self.columns = self.docs.columns
        self.rw = RWLock()
        self.writer = threading.Lock()
        self.maintenance = threading.Lock()  # one index rebuild at a time
        self.closed = False
        self.closing = False
        self.serving = False  # live: searches read it (set by the engine)
        self.higher_is_better = spec.distance.higher_is_better
        qc = spec.vector_index.qc
        self.brute_force_threshold = qc.brute_force_threshold if qc else None  # exact at or below
        self._rebuild_deletes: list[np.ndarray] | None = None  # ids deleted while a rebuild runs
        self._chunks = _ChunkSizer()
        in_memory = {f.name for f in memory_columns(spec)}
        self._memory_at = [(f.name, i) for i, f in enumerate(self.columns) if f.name in in_memory]
        self.index = self._open_index()
        self.maintain()

    @property
    def db(self):
        """The SQLite connection every write of this generation goes through."""
        return self.docs.db

    # -- opening -------------------------------------------------------------------------
    def _open_index(self) -> VectorIndex:
        file = self.path / "index.faiss"
        if file.exists():
            try:
                with open(file, "rb") as fh:
                    index, ids, seq = VectorIndex.read_file(self.spec, fh)
                if seq == self.docs.seq:
                    return self._with_rows(VectorIndex(self.spec, index), ids)
            except Exception:  # unreadable, stale or of an older format: SQLite is the source of truth
                pass
        fresh = VectorIndex(self.spec)
        if fresh.family == "ivf_sq8" and self._ivf_due(self.docs.count_all()):
            fresh.train(self._sample(), doc_count=self.docs.count_all())
        self._fill(fresh, self.docs.db)
        return fresh

    def _with_rows(self, index: VectorIndex, position_ids: np.ndarray) -> VectorIndex:
        """The saved index's row table, from SQLite; ValueError if a row has no position."""
        ids, pks, values = self.docs.all_memory_rows()
        at = np.searchsorted(position_ids, ids)
        if len(ids) and (at.max() >= len(position_ids) or not np.array_equal(position_ids[at], ids)):
            raise ValueError("a row is missing from the saved index")
        n = len(position_ids)
        all_pks: list[Any] = [0 if index.rows.pk_is_integer else ""] * n
        all_values: dict[str, list[Any]] = {name: [None] * n for name in values}
        for j, p in enumerate(at.tolist()):
            all_pks[p] = pks[j]
            for name, column in values.items():
                all_values[name][p] = column[j]
        staged = index.rows.stage(position_ids, all_pks, all_values)
        live = np.zeros(n, dtype=bool)
        live[at] = True
        index.rows.publish(staged, position_ids[~live])
        return index

    def _ivf_due(self, count: int) -> bool:
        """Train IVF automatically once there are linear_build_threshold docs (HA3 brute-forces below),
        or at once when the table was trained explicitly before."""
        trained_before = self.docs.meta("trained", conn=self.docs.reader()) == "1"
        return count >= 39 and (trained_before or count >= self.spec.vector_index.linear_build_threshold)

    def _sample(self) -> np.ndarray:
        count = self.docs.count_all()
        qc = self.spec.vector_index.qc
        nlist = self.spec.vector_index.ivf_nlist(count)
        n = min(count, max(nlist * 64, 10000))
        if qc and qc.train_sample_count:
            n = min(count, qc.train_sample_count)
        elif qc and qc.train_sample_ratio:
            n = max(min(count, nlist * 39), int(count * qc.train_sample_ratio))
        return self.docs.sample(n)

    # -- writes ------------------------------------------------------------------------
    def write(self, rows: dict[Any, tuple[list[Any], np.ndarray]], deletes: Sequence[Any]) -> None:
        """Upsert ``rows`` (pk → (column values in self.columns order, vector)) and delete ``deletes``."""
        with self.writer:
            if self.closed:
                raise Closed(f"generation {self.gen} of table {self.table} is closed")
            self.docs.begin()
            try:
                old_ids, new_ids, vectors = self.docs.write(rows, deletes)
                columns = {name: [values[at] for values, _ in rows.values()] for name, at in self._memory_at}
                staged = self._stage(new_ids, vectors, list(rows), columns)
                with self.rw.write():
                    self.docs.commit()
                    self.index.rows.publish(staged, old_ids)
            except BaseException:
                self.docs.rollback()  # staged positions stay dead
                raise
            if self._rebuild_deletes is not None:
                self._rebuild_deletes.append(old_ids)
            self.docs.wrote(len(rows) + len(deletes))
        self.maintain()

    def _stage(self, ids: np.ndarray, vectors: np.ndarray, pks: list, columns: dict[str, list]) -> slice | None:
        """Add to faiss in chunks, each under a short exclusive step; nothing is live yet."""
        if not len(ids):
            return None
        start, done = self.index.rows.n, 0
        while done < len(ids):
            end = min(len(ids), done + self._chunks.size(self.serving))
            part = slice(done, end)
            waits = self.rw.reader_waits
            with self.rw.write():
                t0 = time.perf_counter()
                self.index.add(ids[part], vectors[part], pks[part], {k: v[part] for k, v in columns.items()})
                self._chunks.observe(end - done, time.perf_counter() - t0, self.rw.reader_waits != waits)
            done = end
        return slice(start, start + len(ids))

    def train(self, sample: np.ndarray) -> None:
        """Explicit Qc training (before bulk writes): retrain on ``sample`` and re-add every row."""
        with self.maintenance:
            self._rebuild(sample=sample, trained_explicitly=True)

    def maintain(self) -> None:
        """Train Qc when due, compact past 30 % dead positions: outside every lock searches need.
        Runs in the writer's thread that made it due; other writers go on meanwhile."""
        if not self._due() or not self.maintenance.acquire(blocking=False):
            return
        try:
            if self._due():
                train = self.index.family == "ivf_sq8" and not self.index.is_trained
                self._rebuild(sample=self._sample() if train else None)
        except Closed:
            pass  # switched away or dropped meanwhile: the rebuild is moot
        finally:
            self.maintenance.release()

    def _due(self) -> bool:
        index = self.index
        if self.closing:
            return False
        if index.family == "ivf_sq8" and not index.is_trained:
            return self._ivf_due(index.rows.live_count)
        return index.needs_compaction()

    def _rebuild(self, sample: np.ndarray | None, trained_explicitly: bool = False) -> None:
        """Fill a fresh index from committed rows while writers go on, then swap it in."""
        with self.writer:
            self._rebuild_deletes = []
            fresh = VectorIndex(self.spec) if sample is not None else self._fresh_like(self.index)
        try:
            if sample is not None:
                fresh.train(sample, doc_count=max(self.index.rows.live_count, len(sample)))
            while self._fill(fresh, limit=CATCH_UP_UNDER_LOCK) >= CATCH_UP_UNDER_LOCK:
                pass  # committed rows keep arriving: keep filling outside the writer lock
            with self.writer:
                if self.closed:
                    raise Closed(self.gen)
                self._fill(fresh, self.docs.db)  # what writers committed since: a few rows at most
                fresh.rows.publish(None, np.concatenate([np.empty(0, np.int64), *self._rebuild_deletes]))
                if trained_explicitly:
                    self.docs.begin()
                    self.docs.set_meta("trained", 1)
                    self.docs.set_meta("seq", self.docs.seq + 1)
                    self.docs.commit()
                with self.rw.write():
                    self.index = fresh
        finally:
            self._rebuild_deletes = None

    def _fresh_like(self, index: VectorIndex) -> VectorIndex:
        """An empty index of the same kind; a trained Qc index keeps its centroids (no retraining)."""
        if not index.quantized:
            return VectorIndex(self.spec)
        trained = faiss.clone_index(index.index)
        trained.reset()
        return VectorIndex(self.spec, trained)

    def _fill(self, index: VectorIndex, conn=None, limit: int | None = None) -> int:
        """Add committed rows past the index's last id (all of them, or up to ``limit``); live at once,
        for a private index. Returns how many were added."""
        added = 0
        while limit is None or added < limit:
            if self.closing:
                raise Closed(self.gen)
            ids, pks, values, vectors = self.docs.index_rows(index.rows.last_id(), conn)
            if not len(ids):
                break
            index.rows.publish(index.add(ids, vectors, pks, values), np.empty(0, np.int64))
            added += len(ids)
        return added

    # -- persistence ---------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Write the faiss index atomically, tagged with the SQLite seq it reflects. Holds only
        the writer lock: searches go on reading the index while it is written out."""
        file = self.path / "index.faiss"
        tmp = file.with_suffix(".faiss.tmp")
        with self.writer:
            if self.closed:
                return
            with open(tmp, "wb") as fh:
                self.index.to_file(fh, self.docs.seq)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, file)
            self.docs.checkpoint_wal("TRUNCATE")  # fold the WAL into the main file

    def close(self, checkpoint: bool = True) -> None:
        if self.closed:
            return
        self.closing = True  # a rebuild under way stops at its next chunk
        with self.maintenance:
            if checkpoint:
                try:
                    self.checkpoint()
                except OSError:
                    pass  # the next open rebuilds from SQLite
            with self.writer, self.rw.write():
                self.closed = True
                self.docs.close()

    # -- reads (callers hold self.rw.read()) --------------------------------------------
    def doc_count(self, where: str = "1", params: Sequence[Any] = ()) -> int:
        if where == "1":
            return self.index.rows.live_count
        return self.docs.count(where, params)
