"""The SQLite side of one generation: documents (the source of truth) and their fp32 vectors.

Layout of ``docs.sqlite``::

    docs(_id INTEGER PRIMARY KEY AUTOINCREMENT, <one column per attribute>)
    vecs(_id INTEGER PRIMARY KEY, _vec BLOB): fp32 vectors apart from the attributes, so
         filters, counts and hit lookups read small, densely packed rows
    meta(key, value): seq (bumped by every write), trained (IVF was trained explicitly)

One writer connection, used only under the generation's writer lock; its transaction stays
open while the faiss side stages the same rows and commits when both are published. Readers
get a connection per thread: in WAL mode they read the last committed state without waiting
for a writer's transaction, so a long write never blocks a search's SQLite lookups.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from adapter.engines.rowtable import memory_columns
from adapter.engines.sqlfilter import column_type, quote_ident
from adapter.errors import SchemaError
from adapter.schema.model import TableSpec

RESERVED_COLUMNS = {"_id", "_vec"}
CHUNK = 20000
SQL_VARS = 900  # stay under SQLite's bound-parameter limit
WAL_FOLD_BYTES = 1000 * 16384


def _chunks(items: Sequence[Any], size: int = SQL_VARS) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _connect(path: Path, cache_kib: int) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    # 16 KiB pages hold ~7 rows of a 512-d fp32 vector (4 KiB pages hold one, wasting half);
    # it takes effect only when the file is created, before WAL mode is set.
    db.execute("PRAGMA page_size=16384")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA cache_size=-{cache_kib}")
    db.execute("PRAGMA busy_timeout=10000")
    return db


class DocStore:
    def __init__(self, spec: TableSpec, path: Path):
        self.spec, self.file = spec, path / "docs.sqlite"
        self.columns = list(spec.attribute_fields)
        self.json_columns = frozenset(f.name for f in spec.fields if f.multi_value)  # stored as JSON arrays
        for f in self.columns:
            if f.name in RESERVED_COLUMNS:
                raise SchemaError(f"field name '{f.name}' is reserved by the embedded engine",
                                  location=f"fields.{f.name}")
        self.db = _connect(self.file, 16384)
        # WAL checkpoints run after a write is published (wrote()), not inside its COMMIT, which
        # happens while searches wait
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self._unfolded = 0  # bytes written to the WAL since the last checkpoint, about
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._create_schema()

    def _create_schema(self) -> None:
        pk = self.spec.primary_key
        cols = []
        for f in self.columns:
            extra = " NOT NULL UNIQUE" if f.name == pk else ""
            cols.append(f"{quote_ident(f.name)} {column_type(f)}{extra}")
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

    def reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.file, 2048)
            conn.execute("PRAGMA query_only=1")
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self.db.close()

    # -- meta (writer connection, under the writer lock; or ``conn``) ----------------------------
    def meta(self, key: str, default: str | None = None, conn: sqlite3.Connection | None = None) -> str | None:
        row = (conn or self.db).execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    @property
    def seq(self) -> int:
        return int(self.meta("seq", "0"))

    def count_all(self) -> int:
        return int(self.reader().execute("SELECT count(*) FROM docs").fetchone()[0])

    # -- writes (writer connection, inside a transaction the generation opens and commits) ------
    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def checkpoint_wal(self, mode: str = "PASSIVE") -> None:
        self.db.execute(f"PRAGMA wal_checkpoint({mode})")
        self._unfolded = 0

    def wrote(self, rows: int) -> None:
        """After a committed write: fold the WAL into the database once it holds about as much
        as SQLite's own auto-checkpoint would let it (1000 pages)."""
        self._unfolded += rows * (4 * self.spec.dimension + 256)
        if self._unfolded > WAL_FOLD_BYTES:
            self.checkpoint_wal()

    def write(self, rows: dict[Any, tuple[list[Any], np.ndarray]], deletes: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Replace/insert ``rows`` (pk → (values in self.columns order, vector)) and delete ``deletes``;
        returns (the _ids removed, the new rows' _ids, their vectors). Does not commit."""
        pks = list(rows) + [pk for pk in deletes if pk not in rows]
        names = [quote_ident(f.name) for f in self.columns]
        pkcol = quote_ident(self.spec.primary_key)
        old: list[int] = []
        for part in _chunks(pks):
            marks = ",".join("?" * len(part))
            old += [r[0] for r in self.db.execute(f"SELECT _id FROM docs WHERE {pkcol} IN ({marks})", list(part))]
            self.db.execute(f"DELETE FROM docs WHERE {pkcol} IN ({marks})", list(part))
        for part in _chunks(old):
            self.db.execute(f"DELETE FROM vecs WHERE _id IN ({','.join('?' * len(part))})", list(part))
        row = self.db.execute("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name='docs'), 0), "
                              "coalesce((SELECT max(_id) FROM docs), 0))").fetchone()
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
        self.set_meta("seq", self.seq + 1)
        return np.asarray(old, dtype=np.int64), new_ids, vectors

    # -- rows for the in-memory index -----------------------------------------------------------
    def _memory_select(self) -> list[str]:
        return [quote_ident(self.spec.primary_key)] + [quote_ident(f.name) for f in memory_columns(self.spec)]

    def index_rows(self, after_id: int, conn: sqlite3.Connection | None = None,
                   limit: int = CHUNK) -> tuple[np.ndarray, list, dict[str, list], np.ndarray]:
        """Up to ``limit`` committed rows with _id > after_id, in _id order: (ids, pks, memory
        columns, vectors), for filling an index."""
        names = [f.name for f in memory_columns(self.spec)]
        select = ", ".join(f"d.{c}" for c in self._memory_select())
        rows = (conn or self.reader()).execute(
            f"SELECT d._id, {select}, v._vec FROM docs d JOIN vecs v ON v._id = d._id "
            f"WHERE d._id > ? ORDER BY d._id LIMIT ?", (after_id, limit)).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[-1] for r in rows), dtype=np.float32).reshape(len(rows), self.spec.dimension)
        values = {name: [r[2 + i] for r in rows] for i, name in enumerate(names)}
        return ids, [r[1] for r in rows], values, vectors

    def all_memory_rows(self) -> tuple[np.ndarray, list, dict[str, list]]:
        """(ids, pks, memory columns) of every row, in _id order (re-opening a saved index)."""
        names = [f.name for f in memory_columns(self.spec)]
        rows = self.db.execute(f"SELECT _id, {', '.join(self._memory_select())} FROM docs ORDER BY _id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, [r[1] for r in rows], {name: [r[2 + i] for r in rows] for i, name in enumerate(names)}

    def sample(self, n: int) -> np.ndarray:
        rows = self.reader().execute("SELECT _vec FROM vecs ORDER BY random() LIMIT ?", (n,)).fetchall()
        return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(-1, self.spec.dimension)

    # -- reads (this thread's reader connection) ------------------------------------------------
    def count(self, where: str, params: Sequence[Any]) -> int:
        return int(self.reader().execute(f"SELECT count(*) FROM docs WHERE {where}", list(params)).fetchone()[0])

    def ids_where(self, where: str, params: Sequence[Any]) -> np.ndarray:
        rows = self.reader().execute(f"SELECT _id FROM docs WHERE {where}", list(params)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_vectors(self, where: str, params: Sequence[Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = 0
        conn = self.reader()
        subset = "" if where == "1" else f" AND _id IN (SELECT _id FROM docs WHERE {where})"
        while True:  # keyset pagination: never holds a statement open across yields
            rows = conn.execute(f"SELECT _id, _vec FROM vecs WHERE _id > ?{subset} ORDER BY _id LIMIT {CHUNK}",
                                [last, *params]).fetchall()
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
        select = ["_id", quote_ident(self.spec.primary_key)] + [quote_ident(f) for f in fields]
        out: dict[int, tuple] = {}
        conn = self.reader()
        for part in _chunks(keys):
            marks = ",".join("?" * len(part))
            rows = conn.execute(f"SELECT {', '.join(select)} FROM docs WHERE {key_col} IN ({marks})", list(part)).fetchall()
            for r in rows:
                out[r[0]] = (r[1], self.decode_fields(fields, r[2:2 + len(fields)]), None)
        if with_vector:
            vectors = self.vectors_by_id(list(out))
            out = {i: (pk, values, vectors.get(i)) for i, (pk, values, _) in out.items()}
        return out

    def vectors_by_id(self, ids: list[int]) -> dict[int, list[float]]:
        out = {}
        conn = self.reader()
        for part in _chunks(ids):
            rows = conn.execute(f"SELECT _id, _vec FROM vecs WHERE _id IN ({','.join('?' * len(part))})",
                                list(part)).fetchall()
            out.update((r[0], np.frombuffer(r[1], dtype=np.float32).tolist()) for r in rows)
        return out

    def select(self, where: str, params: Sequence[Any], order_by: str, limit: int, offset: int,
               fields: list[str], with_vector: bool) -> list[tuple[Any, dict, list | None]]:
        select = ["_id", quote_ident(self.spec.primary_key)] + [quote_ident(f) for f in fields]
        sql = f"SELECT {', '.join(select)} FROM docs WHERE {where} ORDER BY {order_by} LIMIT ? OFFSET ?"
        rows = self.reader().execute(sql, [*params, limit, offset]).fetchall()
        vectors = self.vectors_by_id([r[0] for r in rows]) if with_vector else {}
        return [(r[1], self.decode_fields(fields, r[2:2 + len(fields)]), vectors.get(r[0])) for r in rows]

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        return self.reader().execute(sql, list(params)).fetchall()

    def decode_fields(self, names: list[str], values: Sequence[Any]) -> dict[str, Any]:
        json_columns = self.json_columns
        return {name: json.loads(value) if name in json_columns and value is not None else value
                for name, value in zip(names, values)}
