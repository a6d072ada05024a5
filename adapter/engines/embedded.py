"""EmbeddedEngine: faiss + SQLite in a data directory; the engine that needs no server.

Layout::

    data_dir/catalog.sqlite              tables(name, live) and generations(table, gen, spec, created)
    data_dir/tables/<table>/<gen>/       one Generation (docs.sqlite + index.faiss)

Search path: the filter is compiled to SQL, the matching row ids become a faiss
``IDSelectorBitmap`` passed INSIDE the faiss search (so filtered k-NN returns k hits
whenever k documents match). When the filter is very selective (≤ brute_force_threshold
matches, default 2048) or the approximate search returns fewer hits than exist, the
engine answers by exact search over the SQLite vectors instead. Qc tables answer exactly
until their IVF index is trained (explicitly via ``train`` or automatically once
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
from typing import Any, Sequence

import numpy as np

from adapter.engines.base import Document, Hit, SearchResult, TableStats, WriteFailure, WriteResult
from adapter.engines.documents import normalize_document, scalar_value
from adapter.engines.generation import Generation
from adapter.engines.results import (
    merge_vectors, passes_threshold, sort_keys_fn, validate_output_fields, validate_search, validate_sort,
)
from adapter.engines.sqlfilter import SqlFilter, attribute_field, quote_ident
from adapter.errors import ConflictError, NotFoundError, QueryError, SchemaError
from adapter.query.plan import RANK, AggregatePlan, FetchPlan, FilterExpr, SearchPlan
from adapter.schema.model import TableSpec

TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,127}$")
DEFAULT_BRUTE_FORCE = 2048


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
        with self._lock:
            gen = generation or self._live(table)
            key = (table, gen)
            if key in self._open:
                return self._open[key]
            row = self._catalog.execute("SELECT spec FROM generations WHERE table_name = ? AND gen = ?",
                                        key).fetchone()
            if row is None:
                self._live(table)
                raise NotFoundError(f"generation '{gen}' of table '{table}' does not exist", location="generation")
            opened = Generation(table, gen, TableSpec.model_validate(json.loads(row[0])), self._gen_dir(table, gen))
            self._open[key] = opened
            return opened

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
        for doc in docs:
            try:
                pk, values, vector = normalize_document(spec, doc)
            except (ValueError, TypeError) as exc:
                result.failures.append(WriteFailure(doc.pk, str(exc)))
                continue
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
                keys.append(scalar_value(pk_field, pk))
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
        gen = self._generation(table)
        fields, wants_vector = validate_output_fields(gen.spec, output_fields)
        pk_field = gen.spec.field(gen.spec.primary_key)
        keys = []
        for pk in pks:
            try:
                keys.append(scalar_value(pk_field, pk))
            except ValueError:
                continue  # a key that cannot exist is simply missing
        with gen.rw.read():
            rows = gen.rows_by_pk(keys, fields, include_vector or wants_vector)
        return [Hit(pk=rows[k][0], score=None, fields=rows[k][1], vector=rows[k][2]) for k in keys if k in rows]

    def search(self, plan: SearchPlan) -> SearchResult:
        gen = self._generation(plan.table)
        spec = gen.spec
        queries, fields, wants_vector = validate_search(spec, plan)
        sql = SqlFilter(spec, plan.filter)
        sp = plan.search_params
        higher = spec.distance.higher_is_better
        with gen.rw.read():
            allowed = gen.ids_where(sql.sql, sql.params) if plan.filter is not None else None
            visible = len(allowed) if allowed is not None else gen.doc_count()
            brute = (spec.vector_index.qc.brute_force_threshold if spec.vector_index.qc else None) or DEFAULT_BRUTE_FORCE
            exact = (sp.exact
                     or (gen.index.family == "ivf_sq8" and not gen.index.is_trained)
                     or (allowed is not None and len(allowed) <= brute))
            per_vector: list[list[tuple[int, float]]] = []
            want = min(plan.k, visible)
            for q in queries:
                hits = [] if want == 0 else (self._exact(gen, q, plan.k, sql) if exact else
                                             self._approx(gen, q, plan.k, allowed, sp))
                if not exact and len(hits) < want:
                    hits = self._exact(gen, q, plan.k, sql)  # the graph ran dry: never return fewer than exist
                per_vector.append(hits)
            scores = merge_vectors(per_vector, plan.multi_vector_mode)
            scores = {i: s for i, s in scores.items() if passes_threshold(s, plan.score_threshold, higher)}
            sort_fields = [sk.field for sk in plan.sort if sk.field != RANK and sk.field not in fields]
            rows = gen.rows_by_id(list(scores), fields + sort_fields, plan.include_vector or wants_vector) \
                if scores else {}
        if [(sk.field, sk.descending) for sk in plan.sort] == [(RANK, False)]:  # the usual case: best first
            order = sorted(rows, key=(lambda i: -scores[i]) if higher else scores.__getitem__)
        else:
            order = sorted(rows, key=sort_keys_fn(plan.sort, higher, lambda i: scores[i], lambda i, f: rows[i][1].get(f)))
        page = order[plan.start:plan.start + plan.hit]
        hits = []
        for i in page:
            pk, values, vector = rows[i]
            hits.append(Hit(pk=pk, score=scores[i], fields={f: values.get(f) for f in fields}, vector=vector))
        return SearchResult(hits=hits, total=len(order), searched_docs=visible)

    def _approx(self, gen: Generation, q: np.ndarray, k: int, allowed: np.ndarray | None, sp) -> list[tuple[int, float]]:
        nprobes = sp.nprobes
        if nprobes is None and sp.scan_ratio is not None and gen.index.family == "ivf_sq8":
            nprobes = gen.index.default_nprobes(sp.scan_ratio)
        scores, ids = gen.index.search(q[None, :], k, allowed=allowed, max_id=gen.max_id() if allowed is not None else 0,
                                       ef_search=sp.ef_search, nprobes=nprobes)
        found = ids[0] >= 0
        return list(zip(ids[0][found].tolist(), scores[0][found].tolist()))

    @staticmethod
    def _exact(gen: Generation, q: np.ndarray, k: int, sql: SqlFilter) -> list[tuple[int, float]]:
        """Brute force over the SQLite vectors that pass the filter (true fp32 scores)."""
        higher = gen.spec.distance.higher_is_better
        best_ids = np.empty(0, dtype=np.int64)
        best = np.empty(0, dtype=np.float32)
        for ids, vecs in gen.iter_vectors(sql.sql, sql.params):
            if higher:
                scores = vecs @ q
            else:
                diff = vecs - q
                scores = np.einsum("ij,ij->i", diff, diff)
            best_ids = np.concatenate([best_ids, ids])
            best = np.concatenate([best, scores.astype(np.float32)])
            if len(best) > k:
                keep = np.argpartition(-best if higher else best, k - 1)[:k]
                best_ids, best = best_ids[keep], best[keep]
        order = np.argsort(-best if higher else best, kind="stable")
        return [(int(best_ids[i]), float(best[i])) for i in order]

    def fetch(self, plan: FetchPlan) -> SearchResult:
        gen = self._generation(plan.table)
        if plan.ids is not None:
            hits = self.get(plan.table, plan.ids, output_fields=plan.output_fields, include_vector=plan.include_vector)
            return SearchResult(hits=hits, total=len(hits))
        if plan.limit < 0 or plan.offset < 0:
            raise QueryError("limit and offset must not be negative", location="limit")
        spec = gen.spec
        fields, wants_vector = validate_output_fields(spec, plan.output_fields)
        validate_sort(spec, plan.sort, allow_rank=False)
        sql = SqlFilter(spec, plan.filter)
        order = ", ".join(f"{quote_ident(sk.field)} IS NULL, {quote_ident(sk.field)} {'DESC' if sk.descending else 'ASC'}"
                          for sk in plan.sort) or "_id"
        with gen.rw.read():
            total = gen.doc_count(sql.sql, sql.params)
            rows = gen.select(sql.sql, sql.params, order, plan.limit, plan.offset, fields,
                              plan.include_vector or wants_vector)
        return SearchResult(hits=[Hit(pk=r[0], score=None, fields=r[1], vector=r[2]) for r in rows], total=total)

    def count(self, table: str, filter: FilterExpr | None = None) -> int:
        gen = self._generation(table)
        sql = SqlFilter(gen.spec, filter)
        with gen.rw.read():
            return gen.doc_count(sql.sql, sql.params)

    def aggregate(self, plan: AggregatePlan) -> list[dict[str, Any]]:
        gen = self._generation(plan.table)
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
        with gen.rw.read():
            rows = gen.query(query, [*sql.params, plan.max_groups])
        out = []
        for row in rows:
            key = gen.decode_fields(keys, row[:len(keys)])
            values = {fn.label: row[len(keys) + i] for i, fn in enumerate(plan.funcs)}
            out.append({"key": key, "values": values})
        return out

    def stats(self, table: str) -> TableStats:
        gen = self._generation(table)
        with gen.rw.read():
            count = gen.doc_count()
            extra = {"family": gen.index.family, "indexed": gen.index.ntotal, "tombstones": len(gen.index.dead),
                     "trained": gen.index.is_trained, "dimension": gen.spec.dimension,
                     "distance": gen.spec.distance.value}
            if gen.index.nlist:
                extra["nlist"] = gen.index.nlist
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
            live = self._live(table)
            if generation == live:
                raise ConflictError(f"generation '{generation}' is already live", location="generation")
            new = self._generation(table, generation)
            new.checkpoint()  # the new live generation opens fast after a restart
            self._catalog.execute("BEGIN IMMEDIATE")
            self._catalog.execute("UPDATE tables SET live = ? WHERE name = ?", (generation, table))
            self._catalog.execute("DELETE FROM generations WHERE table_name = ? AND gen = ?", (table, live))
            self._catalog.execute("COMMIT")
            self._live_cache[table] = generation
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
