"""EmbeddedEngine: faiss + SQLite in a data directory; the engine that needs no server.

Layout::

    data_dir/catalog.sqlite              tables(name, live) and generations(table, gen, spec, created)
    data_dir/tables/<table>/<gen>/       one Generation (docs.sqlite + index.faiss)

Search path: the filter becomes a set of index positions first, from in-memory columns for
numeric single-valued fields (memfilter.py) or from SQLite otherwise, cached until the next
write; then knn.py picks exact search over that set or a graph / IVF search restricted to it
(faiss ``SearchParameters.sel``), as OpenSearch's k-NN efficient filtering does, so filtered
k-NN returns k hits whenever k documents match. Primary keys come from the row table in
numpy; SQLite is read only for the stored fields a request asks for. Qc tables answer
exactly until their IVF index is trained (explicitly via ``train`` or automatically once
linear_build_threshold documents exist). ``search_params.exact`` forces exact search.

Writes commit to SQLite first (source of truth), then update faiss; the faiss file is
written at checkpoints (``checkpoint``, ``switch_generation``, ``close``) and rebuilt from
SQLite when stale. See ``generation.py`` for the crash-safety and locking story.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from adapter.plan.records import Document, Hit, SearchResult, TableStats, WriteFailure, WriteResult
from adapter.engines.documents import valid_documents
from adapter.engines.faissindex import Selection, VectorIndex
from adapter.engines.generation import Generation
from adapter.engines.knn import search_vector
from adapter.engines.memfilter import filter_mask
from adapter.engines.results import (
    merge_vectors, sort_keys_fn, validate_output_fields, validate_search, validate_sort,
)
from adapter.engines.sqlfilter import SqlFilter, attribute_field, quote_ident
from adapter.errors import ConflictError, NotFoundError, QueryError, SchemaError
from adapter.plan.tree import RANK, AggregatePlan, FetchPlan, FilterExpr, SearchPlan
from adapter.schema.model import TableSpec
from adapter.values import stored_scalar

TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,127}$")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class EmbeddedEngine:
    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # catalog changes and the generation cache
        self._catalog = sqlite3.connect(str(self.data_dir / "catalog.sqlite"), check_same_thread=False,
                                        isolation_level=None)
        self._catalog.execute("PRAGMA journal_mode=WAL")
        self._catalog.execute("CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY, live TEXT NOT NULL, "
                              "next_gen INTEGER NOT NULL)")
        self._catalog.execute("CREATE TABLE IF NOT EXISTS generations (table_name TEXT, gen TEXT, spec TEXT, "
                              "created TEXT, PRIMARY KEY (table_name, gen))")
        self._open: dict[tuple[str, str], Generation] = {}
        self._live_cache: dict[str, str] = {}  # table → live generation; changed only under self._lock
        self._live_gens: dict[str, Generation] = {}  # read without the lock by every search
        self._remove_orphans()

    # -- catalog helpers -------------------------------------------------------------
    def _gen_dir(self, table: str, gen: str) -> Path:
        return self.data_dir / "tables" / table / gen

    def _remove_orphans(self) -> None:
        """Directories of generations a crash left behind (switched away or aborted)."""
        known = {(t, g) for t, g in self._catalog.execute("SELECT table_name, gen FROM generations")}
        root = self.data_dir / "tables"
        if not root.exists():
            return
        for tdir in root.iterdir():
            for gdir in tdir.iterdir() if tdir.is_dir() else []:
                if (tdir.name, gdir.name) not in known:
                    shutil.rmtree(gdir, ignore_errors=True)
            if tdir.is_dir() and not any(tdir.iterdir()):
                tdir.rmdir()

    def _live(self, table: str) -> str:
        live = self._live_cache.get(table)
        if live is not None:
            return live
        row = self._catalog.execute("SELECT live FROM tables WHERE name = ?", (table,)).fetchone()
        if row is None:
            raise NotFoundError(f"table '{table}' does not exist", location="tableName")
        self._live_cache[table] = row[0]
        return row[0]

    def _generation(self, table: str, generation: str | None = None) -> Generation:
        if generation is None:
            live = self._live_gens.get(table)  # a dict read: no lock on the search path
            if live is not None:
                return live
        with self._lock:
            gen = generation or self._live(table)
            key = (table, gen)
            opened = self._open.get(key)
            if opened is None:
                row = self._catalog.execute("SELECT spec FROM generations WHERE table_name = ? AND gen = ?",
                                            key).fetchone()
                if row is None:
                    self._live(table)
                    raise NotFoundError(f"generation '{gen}' of table '{table}' does not exist",
                                        location="generation")
                opened = Generation(table, gen, TableSpec.model_validate(json.loads(row[0])), self._gen_dir(table, gen))
                self._open[key] = opened
            if gen == self._live(table):
                opened.serving = True
                self._live_gens[table] = opened
            return opened

    def _read_live(self, table: str) -> Generation:
        """The live generation with its read lock held; a generation closed by a switch or drop
        just before the lock was taken is passed over for the new live one."""
        while True:
            gen = self._generation(table)
            gen.rw.acquire_read()
            if not gen.closed:
                return gen
            gen.rw.release_read()
            with self._lock:  # the closer has already moved the live pointer (or the table is gone)
                if self._live_gens.get(table) is gen:
                    self._live_gens.pop(table)

    @contextmanager
    def _reading(self, table: str) -> Iterator[Generation]:
        gen = self._read_live(table)
        try:
            yield gen
        finally:
            gen.rw.release_read()

    def _new_generation(self, table: str, spec: TableSpec, gen_no: int) -> str:
        gen = f"g{gen_no}"
        self._catalog.execute("INSERT INTO generations VALUES (?, ?, ?, ?)",
                              (table, gen, json.dumps(spec.public_dict()), _now()))
        return gen

    # -- tables ----------------------------------------------------------------------
    def create_table(self, spec: TableSpec) -> None:
        if not TABLE_NAME.match(spec.name):
            raise SchemaError(f"table name '{spec.name}' must be letters, digits, '_' or '-'", location="table_name")
        with self._lock:
            self._catalog.execute("BEGIN IMMEDIATE")
            try:
                if self._catalog.execute("SELECT 1 FROM tables WHERE name = ?", (spec.name,)).fetchone():
                    raise ConflictError(f"table '{spec.name}' already exists", location="table_name")
                gen = self._new_generation(spec.name, spec, 1)
                self._catalog.execute("INSERT INTO tables VALUES (?, ?, 2)", (spec.name, gen))
                self._catalog.execute("COMMIT")
            except BaseException:
                if self._catalog.in_transaction:  # SQLite already rolled back on SQLITE_FULL and the like
                    self._catalog.execute("ROLLBACK")
                raise
            try:
                self._generation(spec.name, gen)
            except BaseException:
                self.drop_table(spec.name)
                raise

    def drop_table(self, table: str) -> None:
        with self._lock:
            self._live(table)
            self._catalog.execute("BEGIN IMMEDIATE")
            self._catalog.execute("DELETE FROM tables WHERE name = ?", (table,))
            self._catalog.execute("DELETE FROM generations WHERE table_name = ?", (table,))
            self._catalog.execute("COMMIT")
            self._live_cache.pop(table, None)
            self._live_gens.pop(table, None)
            for key in [k for k in self._open if k[0] == table]:
                self._open.pop(key).close(checkpoint=False)
            shutil.rmtree(self.data_dir / "tables" / table, ignore_errors=True)

    def list_tables(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._catalog.execute("SELECT name FROM tables ORDER BY name")]

    def get_spec(self, table: str) -> TableSpec:
        return self._generation(table).spec

    # -- writes ----------------------------------------------------------------------
    def upsert(self, table: str, docs: Sequence[Document], *, generation: str | None = None) -> WriteResult:
        gen = self._generation(table, generation)
        spec = gen.spec
        result = WriteResult()
        rows: dict[Any, tuple[list[Any], np.ndarray]] = {}
        for pk, values, vector in valid_documents(spec, docs, result.failures):
            columns = [json.dumps(values.get(f.name)) if f.multi_value and values.get(f.name) is not None
                       else values.get(f.name) for f in gen.columns]
            rows.pop(pk, None)  # last write of a key in one batch wins, in batch order
            rows[pk] = (columns, vector)
        if rows:
            gen.write(rows, [])
        result.written = len(rows)
        return result

    def delete(self, table: str, pks: Sequence[Any], *, generation: str | None = None) -> WriteResult:
        gen = self._generation(table, generation)
        pk_field = gen.spec.field(gen.spec.primary_key)
        result = WriteResult()
        keys = []
        for pk in pks:
            try:
                keys.append(stored_scalar(pk_field, pk))
            except ValueError as exc:
                result.failures.append(WriteFailure(pk, str(exc)))
        if keys:
            gen.write({}, keys)
        result.written = len(keys)
        return result

    def train(self, table: str, sample: np.ndarray, *, generation: str | None = None,
              doc_count: int | None = None) -> None:
        gen = self._generation(table, generation)
        if gen.index.family != "ivf_sq8":
            return
        if doc_count is not None and not gen.spec.vector_index.trains_ivf(doc_count):
            return  # a small table stays exact; it trains itself once it reaches the threshold
        sample = np.asarray(sample, dtype=np.float32)
        if sample.ndim != 2 or sample.shape[1] != gen.spec.dimension or len(sample) == 0:
            raise QueryError(f"training sample must be (n, {gen.spec.dimension}) vectors, got {sample.shape}")
        gen.train(sample)

    def checkpoint(self, table: str | None = None) -> None:
        """Write faiss files now (otherwise done at switch and close)."""
        with self._lock:
            gens = [g for (t, _), g in self._open.items() if table is None or t == table]
        for g in gens:
            g.checkpoint()

    # -- reads -----------------------------------------------------------------------
    def get(self, table: str, pks: Sequence[Any], *, output_fields: list[str] | None = None,
            include_vector: bool = False) -> list[Hit]:
        with self._reading(table) as gen:
            fields, wants_vector = validate_output_fields(gen.spec, output_fields)
            pk_field = gen.spec.field(gen.spec.primary_key)
            keys = []
            for pk in pks:
                try:
                    keys.append(stored_scalar(pk_field, pk))
                except ValueError:
                    continue  # a key that cannot exist is simply missing
            rows = gen.docs.rows_by_pk(keys, fields, include_vector or wants_vector)
        return [Hit(pk=rows[k][0], score=None, fields=rows[k][1], vector=rows[k][2]) for k in keys if k in rows]

    def search(self, plan: SearchPlan) -> SearchResult:
        gen = self._read_live(plan.table)
        try:
            queries, fields, wants_vector = validate_search(gen.spec, plan)
            index = gen.index
            sp = plan.search_params
            filtered = plan.filter is not None
            if filtered:
                selection = self._filter_selection(gen, index, SqlFilter(gen.spec, plan.filter), plan.filter)
            else:
                selection = index.live_selection()
            visible = selection.count if selection is not None else index.rows.live_count
            if sp.exact and index.quantized:  # true fp32 scores: the codes are approximations
                per_vector = [self._exact_from_sqlite(gen, index, q, plan.k, selection) for q in queries]
            else:
                per_vector = [search_vector(index, q, plan.k, selection, sp, filtered, gen.brute_force_threshold)
                              for q in queries]
            order, scores = self._rank(per_vector, plan, gen.higher_is_better)
            sort = plan.sort
            if len(sort) != 1 or sort[0].field != RANK or sort[0].descending:
                order, scores = self._sort_by_keys(gen, index, plan, order, scores)
            total = len(order)
            if plan.start or plan.hit < total:
                order, scores = order[plan.start:plan.start + plan.hit], scores[plan.start:plan.start + plan.hit]
            hits = self._hits(gen, index, order, scores, fields, plan.include_vector or wants_vector)
        finally:
            gen.rw.release_read()
        return SearchResult(hits, total, visible)

    @staticmethod
    def _filter_selection(gen: Generation, index: VectorIndex, sql: SqlFilter, expr: FilterExpr) -> Selection:
        """The live positions matching the filter, cached until the next write."""
        rows = index.rows

        def build() -> Selection:
            mask = filter_mask(gen.spec, rows, expr)
            if mask is None:  # a string or multi-valued field: SQLite's indexes answer
                mask = np.zeros(rows.n, dtype=bool)
                mask[rows.positions_of(gen.docs.ids_where(sql.sql, sql.params))] = True
            return Selection(mask & rows.live_mask())

        return rows.cached(("filter", sql.sql, tuple(sql.params)), build)

    @staticmethod
    def _rank(per_vector: list[tuple[np.ndarray, np.ndarray]], plan: SearchPlan,
              higher: bool) -> tuple[np.ndarray, np.ndarray]:
        """Positions best first, with their scores: merged across query vectors, thresholded,
        equal scores in insertion order (faiss's result heaps already break ties by position)."""
        if len(per_vector) == 1:
            positions, scores = per_vector[0]
        else:
            merged = merge_vectors([zip(p.tolist(), s.tolist()) for p, s in per_vector], plan.multi_vector_mode)
            positions = np.fromiter(merged, dtype=np.int64, count=len(merged))
            scores = np.fromiter(merged.values(), dtype=np.float64, count=len(merged))
        if plan.score_threshold is not None:
            keep = scores >= plan.score_threshold if higher else scores <= plan.score_threshold
            positions, scores = positions[keep], scores[keep]
        if len(per_vector) > 1:
            order = np.lexsort((positions, -scores if higher else scores))  # positions follow _id order
            positions, scores = positions[order], scores[order]
        return positions, scores

    @staticmethod
    def _sort_by_keys(gen: Generation, index: VectorIndex, plan: SearchPlan, positions: np.ndarray,
                      scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sort_fields = [sk.field for sk in plan.sort if sk.field != RANK]
        ids = index.rows.ids[positions].tolist()
        rows = gen.docs.rows_by_id(ids, sort_fields, False)
        score_of = dict(zip(range(len(ids)), scores.tolist()))
        key = sort_keys_fn(plan.sort, gen.higher_is_better, score_of.__getitem__, lambda i, f: rows[ids[i]][1].get(f))
        order = sorted(range(len(ids)), key=key)
        return positions[order], scores[order]

    @staticmethod
    def _hits(gen: Generation, index: VectorIndex, positions: np.ndarray, scores: np.ndarray,
              fields: list[str], with_vector: bool) -> list[Hit]:
        pks = index.rows.pks[positions].tolist()
        scores = scores.tolist()
        if not fields and not with_vector:  # the service's hot path: nothing stored to read
            return [Hit(pk, score, {}, None) for pk, score in zip(pks, scores)]
        ids = index.rows.ids[positions].tolist()
        rows = gen.docs.rows_by_id(ids, fields, with_vector)
        return [Hit(pk, score, rows[i][1], rows[i][2]) for pk, score, i in zip(pks, scores, ids)]

    @staticmethod
    def _exact_from_sqlite(gen: Generation, index: VectorIndex, q: np.ndarray, k: int,
                           selection: Selection | None) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the SQLite fp32 vectors of the selected positions (a trained Qc index
        keeps only int8 codes)."""
        higher = gen.higher_is_better
        best_pos = np.empty(0, dtype=np.int64)
        best = np.empty(0, dtype=np.float32)
        for ids, vecs in gen.docs.iter_vectors("1", []):
            positions = index.rows.positions_of(ids)
            allowed = index.rows.live[positions] if selection is None else selection.mask[positions]
            vecs, positions = vecs[allowed], positions[allowed]
            if higher:
                scores = vecs @ q
            else:
                diff = vecs - q
                scores = np.einsum("ij,ij->i", diff, diff)
            best_pos = np.concatenate([best_pos, positions])
            best = np.concatenate([best, scores.astype(np.float32)])
            if len(best) > k:
                keep = np.argpartition(-best if higher else best, k - 1)[:k]
                best_pos, best = best_pos[keep], best[keep]
        order = np.argsort(-best if higher else best, kind="stable")
        return best_pos[order], best[order]

    def fetch(self, plan: FetchPlan) -> SearchResult:
        if plan.ids is not None:
            hits = self.get(plan.table, plan.ids, output_fields=plan.output_fields, include_vector=plan.include_vector)
            return SearchResult(hits=hits, total=len(hits))
        if plan.limit < 0 or plan.offset < 0:
            raise QueryError("limit and offset must not be negative", location="limit")
        with self._reading(plan.table) as gen:
            spec = gen.spec
            fields, wants_vector = validate_output_fields(spec, plan.output_fields)
            validate_sort(spec, plan.sort, allow_rank=False)
            sql = SqlFilter(spec, plan.filter)
            order = ", ".join(f"{quote_ident(sk.field)} IS NULL, {quote_ident(sk.field)} {'DESC' if sk.descending else 'ASC'}"
                              for sk in plan.sort) or "_id"
            total = gen.doc_count(sql.sql, sql.params)
            rows = gen.docs.select(sql.sql, sql.params, order, plan.limit, plan.offset, fields,
                                   plan.include_vector or wants_vector)
        return SearchResult(hits=[Hit(pk=r[0], score=None, fields=r[1], vector=r[2]) for r in rows], total=total)

    def count(self, table: str, filter: FilterExpr | None = None) -> int:
        with self._reading(table) as gen:
            sql = SqlFilter(gen.spec, filter)
            return gen.doc_count(sql.sql, sql.params)

    def aggregate(self, plan: AggregatePlan) -> list[dict[str, Any]]:
        with self._reading(plan.table) as gen:
            return self._aggregate(gen, plan)

    @staticmethod
    def _aggregate(gen: Generation, plan: AggregatePlan) -> list[dict[str, Any]]:
        spec = gen.spec
        keys = [attribute_field(spec, k, "groupKeys").name for k in plan.group_keys]
        selects = []
        for fn in plan.funcs:
            if fn.field is None:
                if fn.func != "count":
                    raise QueryError(f"{fn.func}() needs a field", location=f"aggFuncs.{fn.label}")
                selects.append("count(*)")
                continue
            field = attribute_field(spec, fn.field, "aggFuncs")
            if fn.func != "count" and (not field.type.is_numeric or field.multi_value):
                raise QueryError(f"{fn.func}({fn.field}) needs a single-valued numeric field", location=f"aggFuncs.{fn.label}")
            selects.append(f"{fn.func}({quote_ident(field.name)})")
        sql = SqlFilter(spec, plan.filter)
        group = ", ".join(quote_ident(k) for k in keys)
        query = (f"SELECT {', '.join([quote_ident(k) for k in keys] + selects)} FROM docs WHERE {sql.sql}"
                 + (f" GROUP BY {group} ORDER BY {group}" if keys else "") + " LIMIT ?")
        rows = gen.docs.query(query, [*sql.params, plan.max_groups])
        out = []
        for row in rows:
            key = gen.docs.decode_fields(keys, row[:len(keys)])
            values = {fn.label: row[len(keys) + i] for i, fn in enumerate(plan.funcs)}
            out.append({"key": key, "values": values})
        return out

    def stats(self, table: str) -> TableStats:
        with self._reading(table) as gen:
            index = gen.index
            count = gen.doc_count()
            extra = {"family": index.family, "indexed": index.ntotal, "tombstones": index.rows.dead_count,
                     "trained": index.is_trained, "dimension": gen.spec.dimension,
                     "distance": gen.spec.distance.value}
            if index.nlist:
                extra["nlist"] = index.nlist
        return TableStats(table=table, doc_count=count, generation=gen.gen,
                          index_type=gen.spec.vector_index.index_type.value, extra=extra)

    # -- generations -----------------------------------------------------------------
    def begin_generation(self, table: str, spec: TableSpec | None = None) -> str:
        with self._lock:
            live_spec = self._generation(table).spec
            spec = (spec or live_spec)
            if spec.name != table:
                spec = spec.model_copy(update={"name": table})
            self._catalog.execute("BEGIN IMMEDIATE")
            try:
                (next_gen,) = self._catalog.execute("SELECT next_gen FROM tables WHERE name = ?", (table,)).fetchone()
                gen = self._new_generation(table, spec, next_gen)
                self._catalog.execute("UPDATE tables SET next_gen = ? WHERE name = ?", (next_gen + 1, table))
                self._catalog.execute("COMMIT")
            except BaseException:
                if self._catalog.in_transaction:  # SQLite already rolled back on SQLITE_FULL and the like
                    self._catalog.execute("ROLLBACK")
                raise
            self._generation(table, gen)
            return gen

    def switch_generation(self, table: str, generation: str) -> None:
        with self._lock:
            if generation == self._live(table):
                raise ConflictError(f"generation '{generation}' is already live", location="generation")
            new = self._generation(table, generation)
        new.checkpoint()  # the new live generation opens fast after a restart; searches go on meanwhile
        with self._lock:
            live = self._live(table)
            if generation == live:
                raise ConflictError(f"generation '{generation}' is already live", location="generation")
            self._catalog.execute("BEGIN IMMEDIATE")
            self._catalog.execute("UPDATE tables SET live = ? WHERE name = ?", (generation, table))
            self._catalog.execute("DELETE FROM generations WHERE table_name = ? AND gen = ?", (table, live))
            self._catalog.execute("COMMIT")
            self._live_cache[table] = generation
            new.serving = True
            self._live_gens[table] = new
            old = self._open.pop((table, live), None)
        if old is not None:
            old.close(checkpoint=False)  # waits for searches still reading it
        shutil.rmtree(self._gen_dir(table, live), ignore_errors=True)

    def abort_generation(self, table: str, generation: str) -> None:
        with self._lock:
            if generation == self._live(table):
                raise ConflictError(f"generation '{generation}' is live; switch first", location="generation")
            self._generation(table, generation)  # NotFoundError if unknown
            self._catalog.execute("DELETE FROM generations WHERE table_name = ? AND gen = ?", (table, generation))
            gen = self._open.pop((table, generation), None)
        if gen is not None:
            gen.close(checkpoint=False)
        shutil.rmtree(self._gen_dir(table, generation), ignore_errors=True)

    def generations(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            live = self._live(table)
            rows = self._catalog.execute("SELECT gen, created FROM generations WHERE table_name = ? "
                                         "ORDER BY CAST(substr(gen, 2) AS INTEGER)", (table,)).fetchall()
        out = []
        for gen, created in rows:
            g = self._generation(table, gen)
            out.append({"generation": gen, "live": gen == live, "doc_count": g.doc_count(), "created": created})
        return out

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def close(self) -> None:
        with self._lock:
            for gen in self._open.values():
                gen.close()
            self._open.clear()
            self._catalog.close()
