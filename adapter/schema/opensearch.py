"""TableSpec → OpenSearch k-NN index body, with a report of every decision.

Each mapping decision is recorded where it is made (``Translation.note``), so the report
cannot drift from the body. Credentials never enter the body: ``_meta`` carries
``TableSpec.public_dict()``, which strips them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from adapter.schema.model import (
    DistanceType,
    FieldSpec,
    FieldType,
    TableSpec,
    VectorIndexType,
)

FIELD_TYPES: dict[FieldType, dict[str, Any]] = {
    FieldType.INT8: {"type": "byte"},
    FieldType.INT16: {"type": "short"},
    FieldType.INT32: {"type": "integer"},
    FieldType.INT64: {"type": "long"},
    # Unsigned types widen to the next signed type so every value fits.
    FieldType.UINT8: {"type": "short"},
    FieldType.UINT16: {"type": "integer"},
    FieldType.UINT32: {"type": "long"},
    FieldType.UINT64: {"type": "unsigned_long"},
    FieldType.FLOAT: {"type": "float"},
    FieldType.DOUBLE: {"type": "double"},
    FieldType.STRING: {"type": "keyword"},
    FieldType.TEXT: {"type": "text"},
}
SPACE_TYPES = {DistanceType.SQUARED_EUCLIDEAN: "l2", DistanceType.INNER_PRODUCT: "innerproduct"}
# Which k-NN library builds the graphs. faiss (the default) needs the plugin's native
# libraries, which a full OpenSearch distribution ships; "lucene" is for a k-NN plugin
# without them (the Maven Central artefact scripts/opensearch.sh runs), where a faiss graph
# build or IVF training kills the node. Lucene HNSW is pure Java.
KnnLibrary = Literal["faiss", "lucene"]
# OpenSearch's own defaults for a Lucene HNSW field, used where HA3 gives no graph parameters (Qc).
LUCENE_DEFAULT_M, LUCENE_DEFAULT_EF_CONSTRUCTION = 16, 100
# A Base64 image is far longer than a keyword term may be; keep it in _source, unindexed.
SOURCE_FIELD_IGNORE_ABOVE = 8191
META_KEY = "ha3_adapter"

Status = Literal["mapped", "approximated", "ignored"]


@dataclass
class ReportItem:
    source: str  # HA3 location, e.g. "indexs.vector.parameters.dimension"
    status: Status
    target: str  # OpenSearch side, e.g. "mappings.properties.vector.dimension = 512"
    why: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "status": self.status, "target": self.target, "why": self.why}


@dataclass
class Translation:
    index_name: str
    body: dict[str, Any]
    # Qc only: the k-NN model training request that must run before the index is created.
    model_id: str | None = None
    training_body: dict[str, Any] | None = None
    report: list[ReportItem] = field(default_factory=list)

    def note(self, source: str, status: Status, target: str, why: str = "") -> None:
        self.report.append(ReportItem(source, status, target, why))

    def report_text(self) -> str:
        width = max(len(r.source) for r in self.report)
        lines = [f"Translation report for '{self.index_name}':"]
        for r in self.report:
            line = f"  {r.status:<12} {r.source:<{width}}  ->  {r.target}"
            lines.append(line + (f"   [{r.why}]" if r.why else ""))
        return "\n".join(lines)


def translate(
    spec: TableSpec,
    *,
    index_name: str | None = None,
    shards: int = 1,
    replicas: int = 1,
    doc_count: int | None = None,
    knn_library: KnnLibrary = "faiss",
) -> Translation:
    """Build the index body (and, for Qc with faiss, the model training request) for ``spec``."""
    name = index_name or spec.name
    t = Translation(index_name=name, body={})
    vi = spec.vector_index
    exact_only = vi.index_type is VectorIndexType.LINEAR
    settings: dict[str, Any] = {
        "number_of_shards": shards,
        "number_of_replicas": replicas,
        "knn": not exact_only,
    }
    t.note("table", "mapped", f"index '{name}' ({shards} shard(s), {replicas} replica(s))")

    properties: dict[str, Any] = {}
    for f in spec.fields:
        if f.name == vi.vector_field:
            properties[f.name] = _vector_mapping(spec, t, name, doc_count, knn_library)
        else:
            properties[f.name] = _attribute_mapping(spec, f, t)

    pp = f"indexs.{vi.name}.parameters"
    _note_linear_threshold(spec, t, settings, pp, knn_library)
    mappings: dict[str, Any] = {
        "dynamic": "strict",
        "_meta": {META_KEY: spec.public_dict()},
        "properties": properties,
    }
    if not vi.is_embedding_saved:
        mappings["_source"] = {"excludes": [vi.vector_field]}
        t.note(f"{pp}.is_embedding_saved", "mapped", f"_source.excludes = ['{vi.vector_field}']",
               "vectors are searchable but not returned; includeVector yields none")
    else:
        t.note(f"{pp}.is_embedding_saved", "mapped", "vector kept in _source")
    t.note(f"{pp}.embedding_delimiter", "mapped", f"'{vi.embedding_delimiter}' splits vector strings at ingest and query time")
    for key, why in {
        "major_order": "memory layout of proxima's build; faiss chooses its own",
        "enable_rt_build": "OpenSearch makes every refreshed document searchable (near real time)",
        "enable_recall_report": "no recall sampling in OpenSearch; bench/ann.py measures recall",
        "builder_name": "implied by vector_index_type",
        "searcher_name": "implied by vector_index_type",
        "min_scan_doc_cnt": "used as a floor on IVF nprobes when the document count is known",
    }.items():
        if key in vi.raw_parameters:
            t.note(f"{pp}.{key}", "approximated" if key == "min_scan_doc_cnt" else "ignored", "-", why)
    for other in spec.other_indexes:
        t.note(f"indexs.{other.get('index_name')}", "ignored", "-",
               f"{other.get('index_type')} index: OpenSearch indexes every mapped field already")
    t.note(f"indexs.{spec.primary_key}", "mapped", f"document _id = str({spec.primary_key})",
           "PRIMARYKEY64: add replaces by key, delete removes by key")
    t.body = {"settings": {"index": settings}, "mappings": mappings}
    return t


def _attribute_mapping(spec: TableSpec, f: FieldSpec, t: Translation) -> dict[str, Any]:
    mapping = dict(FIELD_TYPES[f.type])
    where = f"fields.{f.name}"
    extra = " (multi_value: arrays need no mapping change)" if f.multi_value else ""
    if spec.embedding and f.name == spec.embedding.source_field:
        mapping["ignore_above"] = SOURCE_FIELD_IGNORE_ABOVE
        t.note(where, "mapped", f"keyword, ignore_above {SOURCE_FIELD_IGNORE_ABOVE}",
               "image path or Base64 image: long Base64 values stay in _source unindexed")
        if f.object_store is not None:
            t.note(f"{where}.user_defined_param", "mapped", "ingest object-store config only",
                   "bucket and endpoint go to ingest; credentials never enter the index")
    else:
        t.note(where, "mapped", f"{mapping['type']}{extra}",
               "unsigned type widened to hold every value" if f.type.value.startswith("UINT") else "")
    if f.compress_type:
        t.note(f"{where}.compress_type", "ignored", "-", "storage hint; Lucene compresses on its own")
    return mapping


def _vector_mapping(spec: TableSpec, t: Translation, name: str, doc_count: int | None,
                    knn_library: KnnLibrary) -> dict[str, Any]:
    vi = spec.vector_index
    pp = f"indexs.{vi.name}.parameters"
    space = SPACE_TYPES[vi.distance]
    t.note(f"fields.{vi.vector_field}", "mapped", "knn_vector")
    t.note(f"{pp}.dimension", "mapped", f"dimension = {vi.dimension}")
    t.note(f"{pp}.distance_type", "mapped", f"space_type = {space}",
           "l2 is squared L2, so proxima_score = 1/_score - 1" if space == "l2"
           else "faiss innerproduct; _score maps back to the raw inner product")
    if spec.embedding:
        t.note(f"fields.{vi.vector_field}.user_defined_param", "mapped",
               f"ingest embeds '{spec.embedding.source_field}' with model '{spec.embedding.model}'",
               f"modal {spec.embedding.modal}")
    field: dict[str, Any] = {"type": "knn_vector", "dimension": vi.dimension}

    if vi.index_type is VectorIndexType.LINEAR:
        t.note(f"{pp}.vector_index_type", "mapped", "exact search (script_score with knn_score)",
               f"Linear is brute force; index.knn = false builds no graph; the query names space {space}")
        _note_build_search(vi, t, pp, used=set())
        return field

    if knn_library == "lucene":
        return _lucene_mapping(spec, t, space, field)
    if vi.index_type is VectorIndexType.QC:
        return _qc_mapping(spec, t, name, space, doc_count, field)

    m = vi.hnsw_m()
    params = {"m": m, "ef_construction": vi.hnsw.ef_construction, "ef_search": vi.hnsw.ef_search}
    method: dict[str, Any] = {"name": "hnsw", "engine": "faiss", "space_type": space, "parameters": params}
    used = {"builder.max_neighbor_count", "builder.efconstruction", "searcher.ef"}
    t.note(f"{pp}.vector_index_type", "mapped", "method hnsw, engine faiss")
    t.note(f"{pp}.build_index_params.max_neighbor_count", "approximated", f"m = {m}",
           f"proxima caps layer-0 links at {vi.hnsw.max_neighbor_count}; faiss keeps 2*m there")
    t.note(f"{pp}.build_index_params.efconstruction", "mapped", f"ef_construction = {vi.hnsw.ef_construction}")
    t.note(f"{pp}.search_index_params.ef", "mapped", f"ef_search = {vi.hnsw.ef_search}")
    if vi.index_type is VectorIndexType.QGRAPH or vi.hnsw.quantizer:
        params["encoder"] = {"name": "sq", "parameters": {"type": "fp16"}}
        used.add("builder.quantizer_class")
        t.note(f"{pp}.vector_index_type", "approximated", "hnsw + sq fp16 encoder",
               f"QGraph quantizer {vi.hnsw.quantizer or '(default)'}: faiss in OpenSearch offers fp16 scalar quantization only")
    field["method"] = method
    _note_build_search(vi, t, pp, used)
    return field


def _lucene_mapping(spec: TableSpec, t: Translation, space: str, field: dict[str, Any]) -> dict[str, Any]:
    """HNSW, QGraph and Qc as a Lucene HNSW graph: what a k-NN plugin without native code can build."""
    vi = spec.vector_index
    pp = f"indexs.{vi.name}.parameters"
    why = "knn_library lucene: this cluster's k-NN plugin has no native faiss library"
    used: set[str] = set()
    if vi.index_type is VectorIndexType.QC:
        m, efc = LUCENE_DEFAULT_M, LUCENE_DEFAULT_EF_CONSTRUCTION
        t.note(f"{pp}.vector_index_type", "approximated",
               f"method hnsw, engine lucene (m = {m}, ef_construction = {efc})",
               f"{why}; Qc (IVF) needs faiss to train, so a Lucene graph stands in; "
               "scan_ratio and centroid_count have no Lucene counterpart")
    else:
        m, efc = vi.hnsw_m(), vi.hnsw.ef_construction
        used = {"builder.max_neighbor_count", "builder.efconstruction", "searcher.ef"}
        t.note(f"{pp}.vector_index_type", "approximated", "method hnsw, engine lucene", why)
        t.note(f"{pp}.build_index_params.max_neighbor_count", "approximated", f"m = {m}",
               f"proxima caps layer-0 links at {vi.hnsw.max_neighbor_count}; Lucene keeps 2*m there")
        t.note(f"{pp}.build_index_params.efconstruction", "mapped", f"ef_construction = {efc}")
        t.note(f"{pp}.search_index_params.ef", "mapped", f"method_parameters.ef_search = {vi.hnsw.ef_search} per query",
               "a Lucene field takes no ef_search in its mapping")
    method: dict[str, Any] = {"name": "hnsw", "engine": "lucene", "space_type": space,
                              "parameters": {"m": m, "ef_construction": efc}}
    if vi.index_type is VectorIndexType.QGRAPH or (vi.hnsw and vi.hnsw.quantizer):
        method["parameters"]["encoder"] = {"name": "sq"}
        used.add("builder.quantizer_class")
        t.note(f"{pp}.vector_index_type", "approximated", "hnsw + Lucene sq encoder (7-bit scalar quantization)",
               f"QGraph quantizer {(vi.hnsw.quantizer if vi.hnsw else None) or '(default)'}")
    field["method"] = method
    _note_build_search(vi, t, pp, used)
    return field


def _qc_mapping(spec, t: Translation, name: str, space: str, doc_count, field) -> dict[str, Any]:
    vi = spec.vector_index
    qc = vi.qc
    pp = f"indexs.{vi.name}.parameters"
    nlist = vi.ivf_nlist(doc_count)
    nprobes = vi.ivf_nprobes(nlist, doc_count)
    model_id = f"{name}-qc-ivf"
    method = {
        "name": "ivf",
        "engine": "faiss",
        "space_type": space,
        "parameters": {"nlist": nlist, "nprobes": nprobes,
                       "encoder": {"name": "sq", "parameters": {"type": "fp16"}}},
    }
    t.model_id = model_id
    t.training_body = {
        "training_index": f"{name}-train",
        "training_field": vi.vector_field,
        "dimension": vi.dimension,
        "description": f"IVF model for HA3 Qc table {spec.name}",
        "method": method,
    }
    if qc.train_sample_count:
        t.training_body["max_training_vector_count"] = qc.train_sample_count
    field = {"type": "knn_vector", "model_id": model_id}
    t.note(f"{pp}.vector_index_type", "mapped", f"method ivf, engine faiss, via trained model '{model_id}'",
           "IVF needs training: POST /_plugins/_knn/models/{id}/_train before creating the index")
    how = (f"centroid_count {qc.centroid_count_raw} flattened to one level" if qc.centroid_count_raw and "*" in qc.centroid_count_raw
           else "centroid_count" if qc.centroid_count else
           "no centroid_count: ~4*sqrt(N) lists from the document count at build time")
    t.note(f"{pp}.build_index_params.centroid_count", "approximated" if not qc.centroid_count or "*" in (qc.centroid_count_raw or "") else "mapped",
           f"nlist = {nlist}", how)
    t.note(f"{pp}.search_index_params.scan_ratio", "approximated", f"nprobes = {nprobes}",
           f"scan_ratio {qc.scan_ratio} of documents = ceil(scan_ratio * nlist) lists, floor from min_scan_doc_cnt")
    t.note(f"{pp}.build_index_params.quantizer_class", "approximated", "encoder sq fp16",
           f"{qc.quantizer or 'no quantizer'}: OpenSearch's faiss offers fp16 scalar quantization, not int8 (the embedded engine uses int8)")
    used = {"builder.centroid_count", "builder.quantizer_class", "searcher.scan_ratio"}
    if qc.train_sample_count:
        used.add("builder.train_sample_count")
        t.note(f"{pp}.build_index_params.train_sample_count", "mapped",
               f"max_training_vector_count = {qc.train_sample_count}")
    if qc.train_sample_ratio:
        used.add("builder.train_sample_ratio")
        t.note(f"{pp}.build_index_params.train_sample_ratio", "mapped",
               "training sample = ratio * documents, capped by train_sample_count, chosen at rebuild")
    _note_build_search(vi, t, pp, used)
    return field


def _note_build_search(vi, t: Translation, pp: str, used: set[str]) -> None:
    """Account for every proxima build/search parameter not already reported."""
    for group, params in (("build_index_params", vi.build_params), ("search_index_params", vi.search_params)):
        for key in params:
            short = key.split(".", 2)[-1] if key.startswith("proxima.") else key
            if short in used:
                continue
            why = ("proxima build tuning without a faiss counterpart" if group == "build_index_params"
                   else "proxima searcher tuning without a faiss counterpart")
            if short.endswith("thread_count"):
                why = "OpenSearch sizes its own build threads (knn.algo_param.index_thread_qty)"
            t.note(f"{pp}.{group}.{short}", "ignored", "-", why)


def _note_linear_threshold(spec: TableSpec, t: Translation, settings: dict, pp: str,
                           knn_library: KnnLibrary) -> None:
    vi = spec.vector_index
    if vi.index_type is VectorIndexType.LINEAR:
        t.note(f"{pp}.linear_build_threshold", "ignored", "-", "Linear tables never build a graph")
        return
    if knn_library == "lucene":
        t.note(f"{pp}.linear_build_threshold", "ignored", "-",
               "the threshold governs native (faiss) graph builds; Lucene builds its graph at every flush")
        return
    settings["knn.advanced.approximate_threshold"] = vi.linear_build_threshold
    t.note(f"{pp}.linear_build_threshold", "mapped",
           f"index.knn.advanced.approximate_threshold = {vi.linear_build_threshold}",
           "segments below it are searched exactly (OpenSearch >= 2.18)")
