"""One generation of one embedded table: a SQLite file (source of truth) + a faiss index.

Layout under the generation directory::

    docs.sqlite   docs(_id INTEGER PRIMARY KEY AUTOINCREMENT, <one column per attribute>)
                  vecs(_id INTEGER PRIMARY KEY, _vec BLOB): fp32 vectors apart from the attributes,
                  so filters, counts and hit lookups read small, densely packed rows
                  meta(key, value): seq (bumped by every write), trained (IVF was trained)
    index.faiss   the faiss index + tombstones, tagged with the seq it reflects

Crash safety: SQLite runs in WAL mode, so a write either commits or never happened. The
faiss file is replaced atomically (temp file + fsync + os.replace) at checkpoints; if its
seq differs from SQLite's on open (a crash since the last checkpoint), the index is rebuilt
from the SQLite vectors, so the previous committed state is always what readers see.

Concurrency: a readers-writer lock. Searches hold the read side across SQL + faiss, so a
search sees one consistent snapshot; a write holds the write side across its SQLite
transaction and the faiss update. One SQLite connection, serialised by its own mutex.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from adapter.engines.faissindex import VectorIndex
from adapter.engines.sqlfilter import column_type, quote_ident
from adapter.errors import SchemaError
from adapter.schema.model import TableSpec

RESERVED_COLUMNS = {"_id", "_vec"}
CHUNK = 20000
SQL_VARS = 900  # stay under SQLite's bound-parameter limit


class RWLock:
    """Many readers or one writer; writers wait for readers in flight, new readers wait for writers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _chunks(items: Sequence[Any], size: int = SQL_VARS) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Generation:
    def __init__(self, table: str, gen: str, spec: TableSpec, path: Path):
        self.table, self.gen, self.spec, self.path = table, gen, spec, path
        path.mkdir(parents=True, exist_ok=True)
        self.columns = [f for f in spec.attribute_fields]
        self.json_columns = frozenset(f.name for f in spec.fields if f.multi_value)  # stored as JSON arrays
        for f in self.columns:
            if f.name in RESERVED_COLUMNS:
                raise SchemaError(f"field name '{f.name}' is reserved by the embedded engine",
                                  location=f"fields.{f.name}")
        self.db = sqlite3.connect(str(path / "docs.sqlite"), check_same_thread=False, isolation_level=None)
        # 16 KiB pages hold ~7 rows of a 512-d fp32 vector (4 KiB pages hold one, wasting half).
        self.db.execute("PRAGMA page_size=16384")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-16384")  # 16 MiB of pages per generation
        self.db_lock = threading.Lock()
        self.rw = RWLock()
        self.closed = False
        self._create_schema()
        with self.db_lock:
            self._count = int(self.db.execute("SELECT count(*) FROM docs").fetchone()[0])
        self.index = self._open_index()

    # -- schema & persistence -----------------------------------------------------
    def _create_schema(self) -> None:
        pk = self.spec.primary_key
        cols = []
        for f in self.columns:
            extra = " NOT NULL UNIQUE" if f.name == pk else ""
            cols.append(f"{quote_ident(f.name)} {column_type(f)}{extra}")
        with self.db_lock:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("CREATE TABLE IF NOT EXISTS docs (_id INTEGER PRIMARY KEY AUTOINCREMENT, "
                            f"{', '.join(cols)})")
            self.db.execute("CREATE TABLE IF NOT EXISTS vecs (_id INTEGER PRIMARY KEY, _vec BLOB NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            for f in self.columns:
                if f.name != pk and not f.multi_value and f.type.value != "TEXT":
                    self.db.execute(f"CREATE INDEX IF NOT EXISTS {quote_ident('ix_' + f.name)} "
                                    f"ON docs ({quote_ident(f.name)})")
            self.db.execute("COMMIT")

    def _meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    @property
    def seq(self) -> int:
        with self.db_lock:
            return int(self._meta("seq", "0"))

    def _open_index(self) -> VectorIndex:
        file = self.path / "index.faiss"
        if file.exists():
            try:
                index, seq = VectorIndex.from_bytes(self.spec, file.read_bytes())
                if seq == self.seq:
                    return index
            except Exception:  # unreadable or stale: SQLite is the source of truth
                pass
        index = VectorIndex(self.spec)
        self._rebuild(index)
        return index

    def _rebuild(self, index: VectorIndex) -> None:
        """Refill ``index`` from every SQLite vector (training IVF first when due)."""
        count = self.doc_count()
        if index.family == "ivf_sq8" and not index.is_trained:
            if not self._ivf_due(count):
                return
            index.train(self._sample(count), doc_count=count)
        index.reset()
        for ids, vecs in self.iter_vectors("1", []):
            index.add(ids, vecs)

    def _ivf_due(self, count: int) -> bool:
        """Train IVF automatically once there are linear_build_threshold docs (HA3 brute-forces below),
        or at once when the table was trained explicitly before."""
        with self.db_lock:
            trained_before = self._meta("trained") == "1"
        return count >= 39 and (trained_before or count >= self.spec.vector_index.linear_build_threshold)

    def _sample(self, count: int) -> np.ndarray:
        qc = self.spec.vector_index.qc
        nlist = self.spec.vector_index.ivf_nlist(count)
        n = min(count, max(nlist * 64, 10000))
        if qc and qc.train_sample_count:
            n = min(count, qc.train_sample_count)
        elif qc and qc.train_sample_ratio:
            n = max(min(count, nlist * 39), int(count * qc.train_sample_ratio))
        with self.db_lock:
            rows = self.db.execute("SELECT _vec FROM vecs ORDER BY random() LIMIT ?", (n,)).fetchall()
        return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(-1, self.spec.dimension)

    def checkpoint(self) -> None:
        """Write the faiss index atomically, tagged with the SQLite seq it reflects."""
        with self.rw.read():
            data = self.index.to_bytes(self.seq)
            with self.db_lock:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # fold the WAL into the main file
        file = self.path / "index.faiss"
        tmp = file.with_suffix(".faiss.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, file)

    def close(self, checkpoint: bool = True) -> None:
        if self.closed:
            return
        if checkpoint:
            try:
                self.checkpoint()
            except OSError:
                pass  # the next open rebuilds from SQLite
        with self.rw.write():
            self.closed = True
            with self.db_lock:
                self.db.close()

    # -- writes ------------------------------------------------------------------------
    def write(self, rows: dict[Any, tuple[list[Any], np.ndarray]], deletes: Sequence[Any]) -> None:
        """Upsert ``rows`` (pk → (column values in self.columns order, vector)) and delete ``deletes``."""
        pks = list(rows) + [pk for pk in deletes if pk not in rows]
        names = [quote_ident(f.name) for f in self.columns]
        pkcol = quote_ident(self.spec.primary_key)
        with self.rw.write():
            with self.db_lock:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    old: list[int] = []
                    for part in _chunks(pks):
                        marks = ",".join("?" * len(part))
                        old += [r[0] for r in self.db.execute(
                            f"SELECT _id FROM docs WHERE {pkcol} IN ({marks})", list(part))]
                        self.db.execute(f"DELETE FROM docs WHERE {pkcol} IN ({marks})", list(part))
                    for part in _chunks(old):
                        self.db.execute(f"DELETE FROM vecs WHERE _id IN ({','.join('?' * len(part))})", list(part))
                    row = self.db.execute("SELECT max(coalesce((SELECT seq FROM sqlite_sequence "
                                          "WHERE name='docs'), 0), coalesce((SELECT max(_id) FROM docs), 0))").fetchone()
                    next_id = int(row[0]) + 1
                    new_ids = np.arange(next_id, next_id + len(rows), dtype=np.int64)
                    vectors = np.empty((len(rows), self.spec.dimension), dtype=np.float32)
                    params, vec_params = [], []
                    for i, (values, vec) in enumerate(rows.values()):
                        vectors[i] = vec
                        params.append([int(new_ids[i]), *values])
                        vec_params.append((int(new_ids[i]), vec.tobytes()))
                    marks = ",".join("?" * (len(names) + 1))
                    self.db.executemany(f"INSERT INTO docs (_id, {', '.join(names)}) VALUES ({marks})", params)
                    self.db.executemany("INSERT INTO vecs (_id, _vec) VALUES (?, ?)", vec_params)
                    self._set_meta("seq", int(self._meta("seq", "0")) + 1)
                    self.db.execute("COMMIT")
                    self._count += len(rows) - len(old)
                except BaseException:
                    if self.db.in_transaction:  # SQLite already rolled back on SQLITE_FULL and the like
                        self.db.execute("ROLLBACK")
                    raise
            self.index.remove(np.asarray(old, dtype=np.int64))
            if self.index.family != "ivf_sq8" or self.index.is_trained:
                self.index.add(new_ids, vectors)
            self._maintain()

    def _maintain(self) -> None:
        """Called under the write lock: train IVF when due, compact HNSW tombstones."""
        if self.index.family == "ivf_sq8" and not self.index.is_trained and self._ivf_due(self.doc_count()):
            self._rebuild(self.index)
        elif self.index.needs_compaction():
            fresh = VectorIndex(self.spec)
            self._rebuild(fresh)
            self.index = fresh

    def train(self, sample: np.ndarray) -> None:
        with self.rw.write():
            with self.db_lock:
                self.db.execute("BEGIN IMMEDIATE")
                self._set_meta("trained", 1)
                self._set_meta("seq", int(self._meta("seq", "0")) + 1)
                self.db.execute("COMMIT")
            count = self.doc_count()
            self.index.train(sample, doc_count=max(count, len(sample)))
            for ids, vecs in self.iter_vectors("1", []):
                self.index.add(ids, vecs)

    # -- reads (callers hold self.rw.read()) --------------------------------------------
    def doc_count(self, where: str = "1", params: Sequence[Any] = ()) -> int:
        if where == "1":
            return self._count  # kept current by write(): count(*) would scan the table
        with self.db_lock:
            return int(self.db.execute(f"SELECT count(*) FROM docs WHERE {where}", list(params)).fetchone()[0])

    def max_id(self) -> int:
        with self.db_lock:
            return int(self.db.execute("SELECT coalesce(max(_id), 0) FROM docs").fetchone()[0])

    def ids_where(self, where: str, params: Sequence[Any]) -> np.ndarray:
        with self.db_lock:
            rows = self.db.execute(f"SELECT _id FROM docs WHERE {where}", list(params)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_vectors(self, where: str, params: Sequence[Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = 0
        while True:  # keyset pagination: never holds the connection across yields
            with self.db_lock:
                subset = "" if where == "1" else f" AND _id IN (SELECT _id FROM docs WHERE {where})"
                rows = self.db.execute(f"SELECT _id, _vec FROM vecs WHERE _id > ?{subset} "
                                       f"ORDER BY _id LIMIT {CHUNK}", [last, *params]).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            last = int(ids[-1])
            yield ids, vecs

    def rows_by_id(self, ids: Sequence[int], fields: list[str], with_vector: bool) -> dict[int, tuple[Any, dict, list | None]]:
        """_id → (pk, {field: value}, vector or None)."""
        return self._rows("_id", list(ids), fields, with_vector)

    def rows_by_pk(self, pks: Sequence[Any], fields: list[str], with_vector: bool) -> dict[Any, tuple[Any, dict, list | None]]:
        return {v[0]: v for v in self._rows(quote_ident(self.spec.primary_key), list(pks), fields, with_vector).values()}

    def _rows(self, key_col: str, keys: list[Any], fields: list[str], with_vector: bool) -> dict[int, tuple]:
        pk = self.spec.primary_key
        select = ["_id", quote_ident(pk)] + [quote_ident(f) for f in fields]
        out: dict[int, tuple] = {}
        for part in _chunks(keys):
            marks = ",".join("?" * len(part))
            with self.db_lock:
                rows = self.db.execute(f"SELECT {', '.join(select)} FROM docs WHERE {key_col} IN ({marks})",
                                       list(part)).fetchall()
            for r in rows:
                out[r[0]] = (r[1], self.decode_fields(fields, r[2:2 + len(fields)]), None)
        if with_vector:
            vectors = self.vectors_by_id(list(out))
            out = {i: (pk, values, vectors.get(i)) for i, (pk, values, _) in out.items()}
        return out

    def vectors_by_id(self, ids: list[int]) -> dict[int, list[float]]:
        out = {}
        for part in _chunks(ids):
            with self.db_lock:
                rows = self.db.execute(f"SELECT _id, _vec FROM vecs WHERE _id IN ({','.join('?' * len(part))})",
                                       list(part)).fetchall()
            out.update((r[0], np.frombuffer(r[1], dtype=np.float32).tolist()) for r in rows)
        return out

    def select(self, where: str, params: Sequence[Any], order_by: str, limit: int, offset: int,
               fields: list[str], with_vector: bool) -> list[tuple[Any, dict, list | None]]:
        pk = self.spec.primary_key
        select = ["_id", quote_ident(pk)] + [quote_ident(f) for f in fields]
        sql = f"SELECT {', '.join(select)} FROM docs WHERE {where} ORDER BY {order_by} LIMIT ? OFFSET ?"
        with self.db_lock:
            rows = self.db.execute(sql, [*params, limit, offset]).fetchall()
        vectors = self.vectors_by_id([r[0] for r in rows]) if with_vector else {}
        return [(r[1], self.decode_fields(fields, r[2:2 + len(fields)]), vectors.get(r[0])) for r in rows]

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        with self.db_lock:
            return self.db.execute(sql, list(params)).fetchall()

    def decode_fields(self, names: list[str], values: Sequence[Any]) -> dict[str, Any]:
        json_columns = self.json_columns
        return {name: json.loads(value) if name in json_columns and value is not None else value
                for name, value in zip(names, values)}
