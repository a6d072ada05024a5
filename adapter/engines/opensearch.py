"""OpenSearchEngine: the k-NN plugin through opensearch-py, with HA3 semantics on top.

Tables and generations
    A table ``T`` is an alias ``t`` (lower-cased) over one concrete index ``t__g<N>``.
    ``begin_generation`` creates ``t__g<N+1>``; ``switch_generation`` moves the alias in
    ONE ``POST /_aliases`` request (remove + add are applied atomically) and deletes the
    old index. The index body comes from ``adapter.schema.translate``; the TableSpec rides
    in ``_meta.ha3_adapter``, so any process can recover a table's spec from the cluster.

Qc (IVF) tables
    IVF needs a trained model before its index can exist. A Qc generation starts as a
    plain ``knn_vector`` index searched exactly (like HA3 below linear_build_threshold);
    ``train(sample)`` then: creates ``<index>-train``, bulk-loads the sample, runs
    ``POST /_plugins/_knn/models/<index>-qc-ivf/_train``, polls the model until
    ``state == created``, deletes the training index and recreates the (still empty)
    generation index with ``model_id``. Training a generation that already holds documents
    is refused: train first, then write (what ``rebuild`` does).

Writes and refresh
    Bulk requests report every rejected item with its key and reason; items rejected with
    429 are retried with exponential backoff, as is any request failing with 429, 5xx or
    a connection error. Documents become searchable at the next index refresh (1 s by
    default); ``refresh=True`` makes every write wait for it (``refresh=wait_for``), and a
    generation is always refreshed before it goes live.

k-NN library
    ``knn_library`` "faiss" (a full OpenSearch distribution) or "lucene" (a k-NN plugin
    without its native libraries, such as the Maven Central artefact; there a faiss graph
    build or IVF training kills the node). "auto" asks the cluster: nodes started by
    scripts/opensearch.sh declare ``node.attr.knn_library: lucene``; any other cluster gets
    faiss. Each index records the library it was built with in its ``_meta``.

Scores
    OpenSearch returns ``_score``; engines return proxima_score:
    l2 (squared L2 d, ``_score = 1/(1+d)``) → ``1/_score - 1``;
    innerproduct (``_score = 1+ip`` for ip >= 0, else ``1/(1-ip)``) → ``_score - 1`` or ``1 - 1/_score``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Callable, Literal, Sequence

import numpy as np

from adapter.plan.records import Document, Hit, SearchResult, TableStats, WriteFailure, WriteResult
from adapter.engines.documents import valid_documents
from adapter.engines.dsl import filter_dsl
from adapter.engines.results import (
    merge_vectors, passes_threshold, sort_keys_fn, validate_output_fields, validate_search, validate_sort,
)
from adapter.engines.sqlfilter import attribute_field
from adapter.engines.opensearch_transport import (
    REFUSED, FastJSONSerializer, RetryPolicy, Transport, ndjson, reason, require_all_shards,
)
from adapter.errors import (
    ConfigError, ConflictError, EngineError, EngineUnavailableError, NotFoundError, QueryError, SchemaError,
)
from adapter.plan.tree import RANK, AggregatePlan, FetchPlan, FilterExpr, SearchPlan
from adapter.schema.model import DistanceType, TableSpec, VectorIndexType
from adapter.schema.opensearch import META_KEY, SPACE_TYPES, KnnLibrary, translate
from adapter.values import stored_scalar

try:
    from opensearchpy import OpenSearch
except ImportError:  # pragma: no cover
    OpenSearch = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
INDEX_META_KEY = "ha3_adapter_index"  # _meta: {"generation", "trained", "nlist", "model_id", "knn_library"}
NODE_LIBRARY_ATTR = "knn_library"  # node.attr.knn_library: lucene marks a node without native k-NN code
ALIAS_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,200}$")
GEN_INDEX = re.compile(r"^(?P<alias>.+)__g(?P<n>\d+)$")
BULK_CHUNK = 500
CACHE_S = 5.0  # how long table names and specs are reused before asking the cluster again
# Metadata reads answered from the node's own cluster state: they keep working (and stay
# fast) while the cluster has lost its manager; the state is at most moments old.
LOCAL = {"local": "true"}
RADIUS_SLACK = 1e-6  # relative: a few float32 ulps


# -- score conversion (REFERENCE.md §4) -------------------------------------------------------

def to_proxima(score: float, distance: DistanceType) -> float:
    if distance is DistanceType.SQUARED_EUCLIDEAN:
        return 1.0 / score - 1.0
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def from_proxima(value: float, distance: DistanceType) -> float:
    """The OpenSearch ``_score`` a proxima_score corresponds to (for min_score)."""
    if distance is DistanceType.SQUARED_EUCLIDEAN:
        return 1.0 / (1.0 + value)
    return 1.0 + value if value >= 0 else 1.0 / (1.0 - value)


class OpenSearchEngine:
    def __init__(self, client: Any | None = None, *, url: str | None = None, username: str | None = None,
                 password: str | None = None, verify_certs: bool = True, shards: int = 1, replicas: int = 0,
                 refresh: bool = False, max_retries: int = 4, backoff_s: float = 0.5,
                 retry_deadline_s: float = 60.0, request_timeout_s: float = 30.0,
                 table_shards: dict[str, tuple[int, int]] | None = None,
                 train_timeout_s: float = 1800.0, poll_interval_s: float = 2.0,
                 connection_class: Any | None = None, sleep: Callable[[float], None] = time.sleep,
                 knn_library: Literal["auto", "faiss", "lucene"] = "auto"):
        if client is None:
            if OpenSearch is None:
                raise ConfigError("the OpenSearch engine needs the opensearch-py package")
            if not url:
                raise ConfigError("OpenSearchEngine needs a client or a url")
            kwargs: dict[str, Any] = {"hosts": [u.strip() for u in url.split(",") if u.strip()],
                                      "verify_certs": verify_certs, "ssl_show_warn": verify_certs,
                                      # One retry policy: ours (opensearch_transport.py). A node is
                                      # put aside only when it cannot be reached, not when it says
                                      # 503 (the cluster is short of shards, not this node).
                                      "max_retries": 0, "retry_on_status": (), "timeout": request_timeout_s,
                                      "serializer": FastJSONSerializer()}
            if username:
                kwargs["http_auth"] = (username, password or "")
            if connection_class is not None:
                kwargs["connection_class"] = connection_class
            client = OpenSearch(**kwargs)
        self.client = client
        self.shards, self.replicas, self.refresh = shards, replicas, refresh
        # per table (lower-cased alias) from the service config; the rest get shards/replicas
        self.table_shards = {name.lower(): shape for name, shape in (table_shards or {}).items()}
        self.max_retries, self.backoff_s = max_retries, backoff_s  # bulk items refused with 429 retry too
        self._transport = Transport(client, RetryPolicy(max_retries, backoff_s, retry_deadline_s), sleep)
        self.train_timeout_s, self.poll_interval_s = train_timeout_s, poll_interval_s
        self._sleep = sleep
        self._knn_library: KnnLibrary | None = None if knn_library == "auto" else knn_library
        self._cache: dict[str, tuple[str, TableSpec, dict]] = {}
        self._tables: tuple[float, list[str]] | None = None  # (when listed, names)
        self._lock = threading.Lock()

    # -- transport with retries (opensearch_transport.py) --------------------------------
    def _call(self, method: str, path: str, body: Any = None, params: dict | None = None, *,
              idempotent: bool = True, not_found: type[Exception] | None = None, what: str = "") -> Any:
        return self._transport.call(method, path, body, params, idempotent=idempotent, not_found=not_found,
                                    what=what)

    def _exists(self, path: str) -> bool:
        try:
            return bool(self._call("HEAD", path, not_found=_Missing))  # the transport answers HEAD with a bool
        except _Missing:
            return False

    @property
    def knn_library(self) -> KnnLibrary:
        """The library new indexes are built with; "auto" asks the cluster once."""
        if self._knn_library is None:
            resp = self._call("GET", "/_nodes", params={"filter_path": f"nodes.*.attributes.{NODE_LIBRARY_ATTR}"})
            declared = {(n.get("attributes") or {}).get(NODE_LIBRARY_ATTR)
                        for n in (resp or {}).get("nodes", {}).values()}
            self._knn_library = "lucene" if "lucene" in declared else "faiss"
            log.info("k-NN library for new indexes: %s%s", self._knn_library,
                     " (the cluster declares node.attr.knn_library: lucene)" if self._knn_library == "lucene" else "")
        return self._knn_library

    def shape(self, table: str) -> tuple[int, int]:
        """(shards, replicas) for a table's new indexes: its own entry in the config, or the default."""
        return self.table_shards.get(table.lower(), (self.shards, self.replicas))

    # -- names and metadata -------------------------------------------------------------
    @staticmethod
    def _alias(table: str) -> str:
        alias = table.lower()
        if not ALIAS_NAME.match(alias):
            raise SchemaError(f"table name '{table}' must be letters, digits, '_' or '-' for OpenSearch",
                              location="table_name")
        return alias

    def _index_info(self, index: str, table: str) -> tuple[str, TableSpec, dict]:
        """(concrete index, spec, index meta) for an alias or a concrete index name."""
        resp = self._call("GET", f"/{index}/_mapping", params=LOCAL, not_found=NotFoundError,
                          what=f"table '{table}' does not exist")
        if not resp:
            raise NotFoundError(f"table '{table}' does not exist", location="tableName")
        concrete, body = next(iter(resp.items()))
        meta = body.get("mappings", {}).get("_meta", {})
        if META_KEY not in meta:
            raise NotFoundError(f"index '{concrete}' was not created by this adapter", location="tableName")
        return concrete, TableSpec.model_validate(meta[META_KEY]), meta.get(INDEX_META_KEY, {})

    def _live(self, table: str, fresh: bool = False) -> tuple[str, TableSpec, dict]:
        """The live index behind the alias. Reads may use a 5 s cache; generation changes ask fresh."""
        alias = self._alias(table)
        with self._lock:
            hit = self._cache.get(alias)
        if not fresh and hit is not None and hit[2].get("_at", 0) > time.monotonic() - CACHE_S:
            return hit
        concrete, spec, meta = self._index_info(alias, table)
        meta = dict(meta, _at=time.monotonic())
        with self._lock:
            self._cache[alias] = (concrete, spec, meta)
        return concrete, spec, meta

    def _target(self, table: str, generation: str | None) -> tuple[str, TableSpec, dict]:
        if generation is None:
            return self._live(table)
        return self._index_info(f"{self._alias(table)}__{generation}", table)

    def _forget(self, table: str) -> None:
        with self._lock:
            self._cache.pop(self._alias(table), None)
            self._tables = None

    def _gen_indexes(self, alias: str) -> list[dict]:
        rows = self._call("GET", f"/_cat/indices/{alias}__g*",
                          params={"format": "json", "h": "index,docs.count,creation.date.string", **LOCAL}) or []
        out = [r for r in rows if (m := GEN_INDEX.match(r["index"])) and m.group("alias") == alias]
        return sorted(out, key=lambda r: int(GEN_INDEX.match(r["index"]).group("n")))

    # -- index bodies ------------------------------------------------------------------
    def _create_index(self, spec: TableSpec, concrete: str, generation: str) -> None:
        library = self.knn_library
        shards, replicas = self.shape(spec.name)
        t = translate(spec, index_name=concrete, shards=shards, replicas=replicas, knn_library=library)
        body = t.body
        untrained = spec.vector_index.index_type is VectorIndexType.QC and library == "faiss"
        meta = {"generation": generation, "trained": not untrained, "knn_library": library}
        if untrained:
            # Untrained IVF: a plain vector field, searched exactly until train().
            body["settings"]["index"] = {k: v for k, v in body["settings"]["index"].items()
                                         if not k.startswith("knn")} | {"knn": False}
            body["mappings"]["properties"][spec.vector_field] = {"type": "knn_vector", "dimension": spec.dimension}
        body["mappings"]["_meta"][INDEX_META_KEY] = meta
        self._call("PUT", f"/{concrete}", body=body, idempotent=False)

    # -- tables ------------------------------------------------------------------------
    def create_table(self, spec: TableSpec) -> None:
        alias = self._alias(spec.name)
        if self._exists(f"/{alias}"):
            raise ConflictError(f"table '{spec.name}' already exists", location="table_name")
        concrete = f"{alias}__g1"
        self._create_index(spec, concrete, "g1")
        self._call("POST", "/_aliases", body={"actions": [{"add": {"index": concrete, "alias": alias}}]},
                   idempotent=False)
        self._forget(spec.name)

    def drop_table(self, table: str) -> None:
        alias = self._alias(table)
        concrete, spec, _ = self._live(table, fresh=True)
        for row in self._gen_indexes(alias):
            self._delete_index(row["index"], spec)
        self._forget(table)

    def _delete_index(self, index: str, spec: TableSpec) -> None:
        model_id = None
        if spec.vector_index.index_type is VectorIndexType.QC:  # a trained IVF index names its model
            try:
                model_id = self._index_info(index, spec.name)[2].get("model_id")
            except NotFoundError:
                pass
        try:
            self._call("DELETE", f"/{index}", not_found=_Missing)
        except _Missing:
            pass
        if model_id:
            self._delete_model(model_id)

    def _delete_model(self, model_id: str) -> None:
        try:
            self._call("DELETE", f"/_plugins/_knn/models/{model_id}", not_found=_Missing)
        except _Missing:
            pass

    def list_tables(self) -> list[str]:
        """Aliases over our generation indexes. Cached for CACHE_S (an HA query without cluster=
        looks its index up among all tables); this process's creates and drops refresh it."""
        with self._lock:
            listed = self._tables
        if listed is not None and listed[0] > time.monotonic() - CACHE_S:
            return list(listed[1])
        rows = self._call("GET", "/_cat/aliases", params={"format": "json", "h": "alias,index", **LOCAL}) or []
        names = sorted({r["alias"] for r in rows
                        if (m := GEN_INDEX.match(r["index"])) and m.group("alias") == r["alias"]})
        with self._lock:
            self._tables = (time.monotonic(), names)
        return list(names)

    def get_spec(self, table: str) -> TableSpec:
        return self._live(table)[1]

    # -- writes ------------------------------------------------------------------------
    def upsert(self, table: str, docs: Sequence[Document], *, generation: str | None = None) -> WriteResult:
        concrete, spec, _ = self._target(table, generation)
        result = WriteResult()
        actions: list[tuple[Any, dict, dict | None]] = []
        for pk, values, vector in valid_documents(spec, docs, result.failures):
            source = {k: v for k, v in values.items() if v is not None}
            source[spec.vector_field] = np.asarray(vector, dtype=np.float32)
            actions.append((pk, {"index": {"_index": concrete, "_id": str(pk)}}, source))
        self._bulk(actions, result)
        return result

    def delete(self, table: str, pks: Sequence[Any], *, generation: str | None = None) -> WriteResult:
        concrete, spec, _ = self._target(table, generation)
        pk_field = spec.field(spec.primary_key)
        result = WriteResult()
        actions = []
        for pk in pks:
            try:
                key = stored_scalar(pk_field, pk)
            except ValueError as exc:
                result.failures.append(WriteFailure(pk, str(exc)))
                continue
            actions.append((key, {"delete": {"_index": concrete, "_id": str(key)}}, None))
        self._bulk(actions, result)
        return result

    def _bulk(self, actions: list[tuple[Any, dict, dict | None]], result: WriteResult) -> None:
        """Send in chunks; count successes; report rejected items; retry 429 items with backoff."""
        for start in range(0, len(actions), BULK_CHUNK):
            pending = actions[start:start + BULK_CHUNK]
            for attempt in range(self.max_retries + 1):
                lines: list[dict] = []
                for _, action, source in pending:
                    lines.append(action)
                    if source is not None:
                        lines.append(source)
                params = {"refresh": "wait_for"} if self.refresh else None
                resp = self._call("POST", "/_bulk", body=ndjson(lines), params=params)
                retry = []
                for (pk, action, source), item in zip(pending, resp.get("items", [])):
                    op, outcome = next(iter(item.items()))
                    status = outcome.get("status", 500)
                    if status < 300 or (op == "delete" and status == 404):
                        result.written += 1
                    elif status in REFUSED and attempt < self.max_retries:  # refused, not applied: again
                        retry.append((pk, action, source))
                    else:
                        result.failures.append(WriteFailure(pk, _item_reason(outcome)))
                if not retry:
                    break
                pending = retry
                self._sleep(self.backoff_s * (2 ** attempt))

    def train(self, table: str, sample: np.ndarray, *, generation: str | None = None,
              doc_count: int | None = None) -> None:
        concrete, spec, meta = self._target(table, generation)
        if spec.vector_index.index_type is not VectorIndexType.QC or meta.get("knn_library") == "lucene":
            return  # only a faiss IVF index needs training; a Lucene graph builds as it fills
        if doc_count is not None and not spec.vector_index.trains_ivf(doc_count):
            return  # below linear_build_threshold the generation stays a plain field, searched exactly
        sample = np.asarray(sample, dtype=np.float32)
        if sample.ndim != 2 or sample.shape[1] != spec.dimension or len(sample) == 0:
            raise QueryError(f"training sample must be (n, {spec.dimension}) vectors, got {sample.shape}")
        count = self._count(concrete, None, f"training '{table}'")
        if count:
            raise ConflictError(f"generation '{meta.get('generation')}' of '{table}' already holds {count} "
                                "documents; train a Qc generation before writing to it", location="train")
        shards, replicas = self.shape(table)
        t = translate(spec, index_name=concrete, shards=shards, replicas=replicas, doc_count=len(sample))
        training_index = t.training_body["training_index"]
        vf = spec.vector_field
        # 1. training data
        self._delete_index_quietly(training_index)
        self._call("PUT", f"/{training_index}", body={
            "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {"properties": {vf: {"type": "knn_vector", "dimension": spec.dimension}}}})
        lines: list[dict] = []
        for vec in sample:
            lines += [{"index": {"_index": training_index}}, {vf: vec}]
        for i in range(0, len(lines), 2 * BULK_CHUNK):
            resp = self._call("POST", "/_bulk", body=ndjson(lines[i:i + 2 * BULK_CHUNK]))
            if resp.get("errors"):
                raise EngineError(f"loading training vectors failed: {_first_bulk_error(resp)}")
        self._call("POST", f"/{training_index}/_refresh")
        # 2. train and wait for the model
        self._delete_model(t.model_id)
        self._call("POST", f"/_plugins/_knn/models/{t.model_id}/_train", body=t.training_body, idempotent=False)
        deadline = time.monotonic() + self.train_timeout_s
        while True:
            model = self._call("GET", f"/_plugins/_knn/models/{t.model_id}",
                               params={"filter_path": "state,error"})
            state = model.get("state")
            if state == "created":
                break
            if state == "failed":
                raise EngineError(f"IVF training for '{table}' failed: {model.get('error', 'no reason given')}")
            if time.monotonic() > deadline:
                raise EngineError(f"IVF training for '{table}' did not finish in {self.train_timeout_s:.0f} s")
            self._sleep(self.poll_interval_s)
        self._delete_index_quietly(training_index)
        # 3. the generation index, now with the trained model (it is empty, so nothing is lost)
        alias = self._alias(table)
        is_live = self._exists(f"/{concrete}/_alias/{alias}")
        body = t.body
        body["mappings"]["_meta"][INDEX_META_KEY] = {
            "generation": meta.get("generation"), "trained": True, "model_id": t.model_id, "knn_library": "faiss",
            "nlist": t.training_body["method"]["parameters"]["nlist"]}
        self._call("DELETE", f"/{concrete}")
        self._call("PUT", f"/{concrete}", body=body, idempotent=False)
        if is_live:
            self._call("POST", "/_aliases", body={"actions": [{"add": {"index": concrete, "alias": alias}}]},
                   idempotent=False)
        self._forget(table)

    def _delete_index_quietly(self, index: str) -> None:
        try:
            self._call("DELETE", f"/{index}", not_found=_Missing)
        except _Missing:
            pass

    # -- reads -------------------------------------------------------------------------
    def get(self, table: str, pks: Sequence[Any], *, output_fields: list[str] | None = None,
            include_vector: bool = False) -> list[Hit]:
        concrete, spec, _ = self._live(table)
        fields, wants_vector = validate_output_fields(spec, output_fields)
        pk_field = spec.field(spec.primary_key)
        keys = []
        for pk in pks:
            try:
                keys.append(stored_scalar(pk_field, pk))
            except ValueError:
                continue
        if not keys:
            return []
        with_vector = include_vector or wants_vector
        resp = self._call("POST", f"/{concrete}/_mget", body={"ids": [str(k) for k in keys]},
                          params={"_source_includes": ",".join(self._source(spec, fields, with_vector))})
        hits = []
        for doc in resp.get("docs", []):
            if "error" in doc:  # its shard did not answer: not the same as "not found"
                raise EngineUnavailableError(f"get from '{table}': document {doc.get('_id')}: "
                                             f"{_item_reason(doc)}")
            if doc.get("found"):
                hits.append(self._hit(spec, doc, fields, with_vector, None))
        return hits

    @staticmethod
    def _source(spec: TableSpec, fields: list[str], with_vector: bool) -> list[str]:
        names = [spec.primary_key] + [f for f in fields if f != spec.primary_key]
        return names + ([spec.vector_field] if with_vector else [])

    @staticmethod
    def _pk_of(spec: TableSpec, doc: dict) -> Any:
        source = doc.get("_source") or {}
        if spec.primary_key in source:
            return source[spec.primary_key]
        return stored_scalar(spec.field(spec.primary_key), doc["_id"])

    def _hit(self, spec: TableSpec, doc: dict, fields: list[str], with_vector: bool, score: float | None) -> Hit:
        source = doc.get("_source") or {}
        vector = source.get(spec.vector_field) if with_vector else None
        return Hit(pk=self._pk_of(spec, doc), score=score, fields={f: source.get(f) for f in fields},
                   vector=[float(x) for x in vector] if vector is not None else None)

    def search(self, plan: SearchPlan) -> SearchResult:
        concrete, spec, meta = self._live(plan.table)
        queries, fields, wants_vector = validate_search(spec, plan)
        with_vector = plan.include_vector or wants_vector
        sort_fields = [sk.field for sk in plan.sort if sk.field != RANK and sk.field not in fields]
        source = self._source(spec, fields + sort_fields, with_vector)
        flt = filter_dsl(spec, plan.filter) if plan.filter is not None else None
        higher = spec.distance.higher_is_better
        per_vector, docs = [], {}
        for q in queries:
            body = self.knn_body(spec, meta, plan, q, flt)
            body["_source"] = {"includes": source}
            resp = self._search(concrete, body, f"search of '{plan.table}'")
            hits = []
            for doc in resp["hits"]["hits"]:
                pk = self._pk_of(spec, doc)
                docs[pk] = doc
                hits.append((pk, to_proxima(float(doc["_score"]), spec.distance)))
            per_vector.append(hits)
        scores = merge_vectors(per_vector, plan.multi_vector_mode)
        threshold = _float32_inclusive(plan.score_threshold, higher)
        scores = {k: s for k, s in scores.items() if passes_threshold(s, threshold, higher)}
        order = sorted(scores, key=sort_keys_fn(plan.sort, higher, lambda k: scores[k],
                                                lambda k, f: (docs[k].get("_source") or {}).get(f)))
        page = order[plan.start:plan.start + plan.hit]
        return SearchResult(hits=[self._hit(spec, docs[k], fields, with_vector, scores[k]) for k in page],
                            total=len(order))

    def knn_body(self, spec: TableSpec, meta: dict, plan: SearchPlan, q: np.ndarray, flt: dict | None) -> dict:
        """The search body for one query vector: approximate k-NN, or exact script_score."""
        vi = spec.vector_index
        sp = plan.search_params
        vector = np.asarray(q, dtype=np.float32)  # serialized as float32 (FastJSONSerializer)
        exact = sp.exact or vi.index_type is VectorIndexType.LINEAR or not meta.get("trained", True)
        if exact:
            script = {"source": "knn_score", "lang": "knn",
                      "params": {"field": spec.vector_field, "query_value": vector,
                                 "space_type": SPACE_TYPES[spec.distance]}}
            inner = {"bool": {"filter": [flt]}} if flt is not None else {"match_all": {}}
            return {"size": plan.k, "query": {"script_score": {"query": inner, "script": script}}}
        knn: dict[str, Any] = {"vector": vector}
        if plan.score_threshold is not None:
            # Radial search: everything within the threshold, trimmed to the best k by size.
            threshold = _float32_inclusive(plan.score_threshold, spec.distance.higher_is_better)
            if spec.distance is DistanceType.SQUARED_EUCLIDEAN:
                knn["max_distance"] = max(0.0, threshold)
            else:
                knn["min_score"] = from_proxima(threshold, spec.distance)
        else:
            knn["k"] = plan.k
        if flt is not None:
            knn["filter"] = flt
        method: dict[str, Any] = {}
        if meta.get("knn_library") == "lucene":
            # HA3's ef goes with every query: a Lucene field has no ef_search of its own.
            # A Qc table's graph stands in for IVF, so nprobes and scan_ratio have no meaning.
            # Lucene's radial search takes no ef_search.
            ef = sp.ef_search or (vi.hnsw.ef_search if vi.hnsw else None)
            if ef is not None and plan.score_threshold is None:
                method["ef_search"] = max(ef, plan.k)
        elif vi.index_type is VectorIndexType.QC:
            nlist = int(meta.get("nlist") or vi.ivf_nlist(None))
            if sp.nprobes is not None:
                method["nprobes"] = sp.nprobes
            elif sp.scan_ratio is not None:
                method["nprobes"] = vi.ivf_nprobes(nlist, None, sp.scan_ratio)
        elif sp.ef_search is not None:
            method["ef_search"] = max(sp.ef_search, plan.k)
        if method:
            knn["method_parameters"] = method
        return {"size": plan.k, "query": {"knn": {spec.vector_field: knn}}}

    def fetch(self, plan: FetchPlan) -> SearchResult:
        if plan.ids is not None:
            hits = self.get(plan.table, plan.ids, output_fields=plan.output_fields, include_vector=plan.include_vector)
            return SearchResult(hits=hits, total=len(hits))
        concrete, spec, _ = self._live(plan.table)
        if plan.limit < 0 or plan.offset < 0:
            raise QueryError("limit and offset must not be negative", location="limit")
        fields, wants_vector = validate_output_fields(spec, plan.output_fields)
        validate_sort(spec, plan.sort, allow_rank=False)
        with_vector = plan.include_vector or wants_vector
        body = {"query": self._query(spec, plan.filter), "from": plan.offset, "size": plan.limit,
                "track_total_hits": True, "_source": {"includes": self._source(spec, fields, with_vector)},
                "sort": [{sk.field: {"order": "desc" if sk.descending else "asc", "missing": "_last"}}
                         for sk in plan.sort] + [{spec.primary_key: {"order": "asc"}}]}
        resp = self._search(concrete, body, f"fetch from '{plan.table}'")
        hits = [self._hit(spec, d, fields, with_vector, None) for d in resp["hits"]["hits"]]
        return SearchResult(hits=hits, total=int(resp["hits"]["total"]["value"]))

    def _search(self, index: str, body: dict, what: str) -> dict:
        """A search that every shard answered: a partial answer would silently miss documents."""
        resp = self._call("POST", f"/{index}/_search", body=body, params={"allow_partial_search_results": "false"})
        return require_all_shards(resp, what)

    def _count(self, index: str, query: dict | None, what: str) -> int:
        if query is None:
            resp = self._call("GET", f"/{index}/_count")
        else:
            resp = self._call("POST", f"/{index}/_count", body={"query": query})
        return int(require_all_shards(resp, what)["count"])

    @staticmethod
    def _query(spec: TableSpec, expr: FilterExpr | None) -> dict:
        return {"bool": {"filter": [filter_dsl(spec, expr)]}} if expr is not None else {"match_all": {}}

    def count(self, table: str, filter: FilterExpr | None = None) -> int:
        concrete, spec, _ = self._live(table)
        return self._count(concrete, self._query(spec, filter), f"count of '{table}'")

    def aggregate(self, plan: AggregatePlan) -> list[dict[str, Any]]:
        concrete, spec, _ = self._live(plan.table)
        keys = [attribute_field(spec, k, "groupKeys").name for k in plan.group_keys]
        metrics: dict[str, dict] = {}
        for i, fn in enumerate(plan.funcs):
            if fn.field is None:
                if fn.func != "count":
                    raise QueryError(f"{fn.func}() needs a field", location=f"aggFuncs.{fn.label}")
                continue
            field = attribute_field(spec, fn.field, "aggFuncs")
            if fn.func != "count" and (not field.type.is_numeric or field.multi_value):
                raise QueryError(f"{fn.func}({fn.field}) needs a single-valued numeric field",
                                 location=f"aggFuncs.{fn.label}")
            metrics[f"m{i}"] = {"value_count" if fn.func == "count" else fn.func: {"field": field.name}}
        body: dict[str, Any] = {"size": 0, "track_total_hits": True, "query": self._query(spec, plan.filter)}
        if keys:
            body["aggs"] = {"groups": {"composite": {"size": plan.max_groups,
                                                     "sources": [{k: {"terms": {"field": k}}} for k in keys]},
                                       "aggs": metrics}}
        elif metrics:
            body["aggs"] = metrics
        resp = self._search(concrete, body, f"aggregate of '{plan.table}'")

        # OpenSearch answers every metric as a double; min/max/sum of an integer field are
        # integers, as the embedded engine (and HA3) give them.
        integral = {i for i, fn in enumerate(plan.funcs) if fn.field is not None and fn.func in ("min", "max", "sum")
                    and attribute_field(spec, fn.field, "aggFuncs").type.is_integer}

        def values(bucket: dict, doc_count: int) -> dict:
            out = {}
            for i, fn in enumerate(plan.funcs):
                value = doc_count if fn.field is None else bucket[f"m{i}"]["value"]
                out[fn.label] = int(value) if i in integral and value is not None else value
            return out

        if not keys:
            return [{"key": {}, "values": values(resp.get("aggregations", {}), resp["hits"]["total"]["value"])}]
        return [{"key": b["key"], "values": values(b, b["doc_count"])}
                for b in resp["aggregations"]["groups"]["buckets"]]

    def stats(self, table: str) -> TableStats:
        concrete, spec, meta = self._live(table)
        count = self._count(concrete, None, f"stats of '{table}'")
        [row] = self._call("GET", f"/_cat/indices/{concrete}", params={"format": "json", "h": "health,pri,rep", **LOCAL})
        extra = {"index": concrete, "trained": meta.get("trained", True), "dimension": spec.dimension,
                 "distance": spec.distance.value, "knn_library": meta.get("knn_library", "faiss"),
                 "shards": int(row["pri"]), "replicas": int(row["rep"]), "health": row["health"]}
        if meta.get("nlist"):
            extra["nlist"] = meta["nlist"]
        return TableStats(table=table, doc_count=count, generation=meta.get("generation", ""),
                          index_type=spec.vector_index.index_type.value, extra=extra)

    # -- generations ---------------------------------------------------------------------
    def begin_generation(self, table: str, spec: TableSpec | None = None) -> str:
        alias = self._alias(table)
        _, live_spec, _ = self._live(table, fresh=True)
        spec = spec or live_spec
        if spec.name != table:
            spec = spec.model_copy(update={"name": table})
        rows = self._gen_indexes(alias)
        n = 1 + max((int(GEN_INDEX.match(r["index"]).group("n")) for r in rows), default=0)
        gen = f"g{n}"
        self._create_index(spec, f"{alias}__{gen}", gen)
        return gen

    def switch_generation(self, table: str, generation: str) -> None:
        alias = self._alias(table)
        old, spec, _ = self._live(table, fresh=True)
        new = f"{alias}__{generation}"
        if new == old:
            raise ConflictError(f"generation '{generation}' is already live", location="generation")
        self._index_info(new, table)  # NotFoundError if it does not exist
        self._call("POST", f"/{new}/_refresh")  # readers see every document from the first query
        self._call("POST", "/_aliases", body={"actions": [{"remove": {"index": old, "alias": alias}},
                                                          {"add": {"index": new, "alias": alias}}]},
                   idempotent=False)
        self._forget(table)
        self._delete_index(old, spec)

    def abort_generation(self, table: str, generation: str) -> None:
        alias = self._alias(table)
        live, _, _ = self._live(table, fresh=True)
        index = f"{alias}__{generation}"
        if index == live:
            raise ConflictError(f"generation '{generation}' is live; switch first", location="generation")
        _, spec, _ = self._index_info(index, table)
        self._delete_index(index, spec)

    def generations(self, table: str) -> list[dict[str, Any]]:
        alias = self._alias(table)
        live, _, _ = self._live(table)
        out = []
        for row in self._gen_indexes(alias):
            out.append({"generation": row["index"][len(alias) + 2:], "live": row["index"] == live,
                        "doc_count": int(row.get("docs.count") or 0), "created": row.get("creation.date.string")})
        return out

    def health(self) -> dict[str, Any]:
        """The cluster as the node we reach sees it: green/yellow is ok; red (some primary shard
        has no copy, so some tables answer 503) is degraded; no node answering is unavailable.
        ``local``: a node that lost its cluster manager still answers from its own state."""
        try:
            resp = self.client.transport.perform_request(
                "GET", "/_cluster/health", params={"local": "true", "timeout": "1s", "request_timeout": 3})
        except Exception as exc:  # noqa: BLE001 - any failure to reach the cluster is "unavailable"
            return {"status": "unavailable", "reason": reason(exc)}
        cluster = {"status": resp.get("status"), "nodes": resp.get("number_of_nodes"),
                   "unassigned_shards": resp.get("unassigned_shards")}
        return {"status": "degraded" if resp.get("status") == "red" else "ok", "cluster": cluster}

    def close(self) -> None:
        self.client.close()


def _float32_inclusive(threshold: float | None, higher_is_better: bool) -> float | None:
    """HA3 ``sf`` widened by a few float32 rounding steps.

    OpenSearch computes and returns scores in float32 (``_score = 1/(1+d)`` or ``1+ip``),
    so a document exactly at the threshold can come back a rounding step beyond it; it
    must stay in, as it does on the embedded engine.
    """
    if threshold is None:
        return None
    slack = RADIUS_SLACK * max(1.0, abs(threshold))
    return threshold - slack if higher_is_better else threshold + slack


class _Missing(Exception):
    """Internal: a 404 the caller expects."""


def _item_reason(outcome: dict) -> str:
    err = outcome.get("error")
    if isinstance(err, dict):
        return f"{err.get('type', 'error')}: {err.get('reason', '')}".strip()
    return str(err or f"status {outcome.get('status')}")


def _first_bulk_error(resp: dict) -> str:
    for item in resp.get("items", []):
        outcome = next(iter(item.values()))
        if outcome.get("error"):
            return _item_reason(outcome)
    return "unknown"
