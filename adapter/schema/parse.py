"""HA3 schema JSON → TableSpec.

Accepts the schema as the HA3 console and the image-search guide write it: top-level
``fields`` and ``indexs`` (sic; ``indexes`` too), or a table object wrapping them
(``{"name": ..., "schema": {...}}`` / ``{"table_name": ..., "fields": ...}``). Index
parameters are strings, some holding JSON (``build_index_params``). Every error names the
JSON path at fault.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from adapter import safejson
from adapter.errors import SchemaError
from adapter.schema.model import (
    DistanceType,
    EmbeddingSpec,
    FieldSpec,
    FieldType,
    HnswParams,
    ObjectStoreSpec,
    QcParams,
    TableSpec,
    VectorIndexSpec,
    VectorIndexType,
)

PRIMARY_KEY_INDEX_TYPES = {"PRIMARYKEY64", "PRIMARYKEY128"}
VECTOR_INDEX_TYPES = {"CUSTOMIZED"}
# user_defined_param keys that are credentials: never copied into FieldSpec.params.
SECRET_PARAM_KEYS = {"oss_access_key", "oss_secret", "access_key_id", "access_key_secret"}


def load_schema_file(path: str | Path, table_name: str | None = None) -> TableSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaError(f"cannot read schema file: {exc.strerror}", str(path)) from None
    return parse_schema(text, table_name or _default_table_name(path))


def parse_schema(source: str | bytes | dict, table_name: str | None = None) -> TableSpec:
    """Parse HA3 schema JSON (text or already-decoded) into a TableSpec."""
    doc = _decode_json(source) if isinstance(source, (str, bytes)) else source
    if not isinstance(doc, dict):
        raise SchemaError("schema must be a JSON object with 'fields' and 'indexs'", "$")
    doc, path, wrapped_name = _unwrap(doc)
    name = table_name or wrapped_name or "default"
    fields = _parse_fields(doc, path)
    by_name = {f.name: f for f in fields}
    indexes_key = "indexs" if "indexs" in doc else "indexes"
    indexes = doc.get(indexes_key)
    ipath = f"{path}.{indexes_key}"
    if not isinstance(indexes, list):
        raise SchemaError("'indexs' must be a list of index definitions", ipath)

    primary_key: str | None = None
    vector_index: VectorIndexSpec | None = None
    others: list[dict[str, Any]] = []
    for i, index in enumerate(indexes):
        ip = f"{ipath}[{i}]"
        if not isinstance(index, dict):
            raise SchemaError("index definition must be an object", ip)
        index_type = str(index.get("index_type", "")).upper()
        if index_type in PRIMARY_KEY_INDEX_TYPES:
            names = _index_field_names(index, ip)
            if len(names) != 1:
                raise SchemaError("a primary key index names exactly one field", f"{ip}.index_fields")
            _require_field(by_name, names[0], f"{ip}.index_fields")
            primary_key = names[0]
        elif index_type in VECTOR_INDEX_TYPES:
            if vector_index is not None:
                raise SchemaError("only one CUSTOMIZED vector index per table is supported", ip)
            vector_index = _parse_vector_index(index, ip, by_name)
        else:
            others.append(index)

    if primary_key is None:
        raise SchemaError("no primary key: add an index with index_type PRIMARYKEY64", ipath)
    if vector_index is None:
        raise SchemaError("no vector index: add an index with index_type CUSTOMIZED", ipath)
    if vector_index.pk_field != primary_key:
        raise SchemaError(
            f"the vector index's first field '{vector_index.pk_field}' must be the primary key "
            f"'{primary_key}'",
            f"{ipath}[{_index_position(indexes, vector_index.name)}].index_fields[0]",
        )
    embedding = _parse_embedding(by_name[vector_index.vector_field], by_name, path, fields)
    return TableSpec(
        name=name,
        fields=fields,
        primary_key=primary_key,
        vector_index=vector_index,
        embedding=embedding,
        other_indexes=others,
    )


# --------------------------------------------------------------------------- documents


def _decode_json(source: str | bytes) -> Any:
    try:
        return safejson.loads(source)
    except safejson.JsonError as exc:
        raise SchemaError(f"invalid JSON: {exc.msg}", exc.where("$").removeprefix("$ ")) from None


def _unwrap(doc: dict) -> tuple[dict, str, str | None]:
    """Find the object holding fields/indexs; return it, its JSON path and a table name."""
    name = doc.get("name") or doc.get("table_name") or doc.get("tableName")
    if "fields" in doc:
        return doc, "$", name
    for key in ("schema", "table", "index_schema"):
        inner = doc.get(key)
        if isinstance(inner, str):
            inner = _decode_json(inner)
        if isinstance(inner, dict) and "fields" in inner:
            inner_name = inner.get("name") or inner.get("table_name")
            return inner, f"$.{key}", name or inner_name
    raise SchemaError("schema has no 'fields' list", "$.fields")


def _default_table_name(path: Path) -> str:
    stem = path.name.split(".")[0]
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in stem) or "default"


# --------------------------------------------------------------------------- fields


def _parse_fields(doc: dict, path: str) -> list[FieldSpec]:
    raw_fields = doc.get("fields")
    fpath = f"{path}.fields"
    if not isinstance(raw_fields, list) or not raw_fields:
        raise SchemaError("'fields' must be a non-empty list", fpath)
    fields: list[FieldSpec] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_fields):
        fp = f"{fpath}[{i}]"
        if not isinstance(raw, dict):
            raise SchemaError("field definition must be an object", fp)
        name = raw.get("field_name")
        if not isinstance(name, str) or not name.strip():
            raise SchemaError("field_name must be a non-empty string", f"{fp}.field_name")
        if name in seen:
            raise SchemaError(
                f"duplicate field name '{name}' (first defined at {fpath}[{seen[name]}])",
                f"{fp}.field_name",
            )
        seen[name] = i
        type_name = str(raw.get("field_type", "")).upper()
        try:
            field_type = FieldType(type_name)
        except ValueError:
            allowed = ", ".join(t.value for t in FieldType)
            raise SchemaError(
                f"unknown field_type '{raw.get('field_type')}' (expected one of {allowed})",
                f"{fp}.field_type",
            ) from None
        params = raw.get("user_defined_param") or {}
        if isinstance(params, str):
            params = _json_in_string(params, f"{fp}.user_defined_param") if params.strip() else {}
        if not isinstance(params, dict):
            raise SchemaError("user_defined_param must be an object", f"{fp}.user_defined_param")
        fields.append(
            FieldSpec(
                name=name,
                type=field_type,
                multi_value=_as_bool(raw.get("multi_value", False), f"{fp}.multi_value"),
                compress_type=raw.get("compress_type"),
                params={k: v for k, v in params.items() if k not in SECRET_PARAM_KEYS},
                object_store=_object_store(params),
            )
        )
    return fields


def _object_store(params: dict) -> ObjectStoreSpec | None:
    if str(params.get("content_type", "")).lower() not in {"oss", "s3"}:
        return None
    # Key names follow their meaning: oss_access_key is the AccessKey ID and oss_secret the
    # AccessKey secret. (The image-search guide's prose swaps the two descriptions.)
    key_id = params.get("oss_access_key") or params.get("access_key_id")
    secret = params.get("oss_secret") or params.get("access_key_secret")
    return ObjectStoreSpec(
        content_type=str(params.get("content_type")).lower(),
        endpoint=str(params.get("oss_endpoint") or params.get("endpoint") or ""),
        bucket=str(params.get("oss_bucket") or params.get("bucket") or ""),
        access_key_id=SecretStr(str(key_id)) if key_id else None,
        access_key_secret=SecretStr(str(secret)) if secret else None,
    )


def _parse_embedding(
    vector_field: FieldSpec, by_name: dict[str, FieldSpec], path: str, fields: list[FieldSpec]
) -> EmbeddingSpec | None:
    params = vector_field.params
    if "vector_model" not in params:
        return None  # vectors arrive ready-made
    fp = f"{path}.fields[{fields.index(vector_field)}].user_defined_param"
    model = params["vector_model"]
    if not isinstance(model, str) or not model:
        raise SchemaError("vector_model must be a model name such as 'clip'", f"{fp}.vector_model")
    modal = str(params.get("vector_modal", "image")).lower()
    if modal not in ("image", "text"):
        raise SchemaError(
            f"vector_modal '{params.get('vector_modal')}' is not 'image' or 'text'", f"{fp}.vector_modal"
        )
    source = params.get("vector_source_field") or "vector_source_image"
    _require_field(by_name, source, f"{fp}.vector_source_field")
    if by_name[source].type not in (FieldType.STRING, FieldType.TEXT):
        raise SchemaError(
            f"source field '{source}' must be STRING (an image path or Base64 image)",
            f"{fp}.vector_source_field",
        )
    return EmbeddingSpec(model=model, modal=modal, source_field=source)


# --------------------------------------------------------------------------- indexes


def _index_field_names(index: dict, path: str) -> list[str]:
    raw = index.get("index_fields")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        names = []
        for j, item in enumerate(raw):
            if isinstance(item, str):
                names.append(item)
            elif isinstance(item, dict) and isinstance(item.get("field_name"), str):
                names.append(item["field_name"])
            else:
                raise SchemaError(
                    "index field must be a name or {\"field_name\": ...}", f"{path}.index_fields[{j}]"
                )
        if names:
            return names
    raise SchemaError("index_fields must name at least one field", f"{path}.index_fields")


def _index_position(indexes: list, name: str) -> int:
    return next(i for i, ix in enumerate(indexes) if isinstance(ix, dict) and ix.get("index_name") == name)


def _require_field(by_name: dict[str, FieldSpec], name: str, path: str) -> FieldSpec:
    if name not in by_name:
        raise SchemaError(f"field '{name}' is not defined in 'fields'", path)
    return by_name[name]


def _parse_vector_index(index: dict, ip: str, by_name: dict[str, FieldSpec]) -> VectorIndexSpec:
    names = _index_field_names(index, ip)
    if len(names) < 2:
        raise SchemaError(
            "a CUSTOMIZED vector index lists [primary key field, vector field]", f"{ip}.index_fields"
        )
    for j, name in enumerate(names):
        _require_field(by_name, name, f"{ip}.index_fields[{j}]")
    vector = by_name[names[-1]]
    vpath = f"{ip}.index_fields[{len(names) - 1}]"
    if vector.type not in (FieldType.FLOAT, FieldType.DOUBLE):
        raise SchemaError(f"vector field '{vector.name}' must be FLOAT, not {vector.type.value}", vpath)
    if not vector.multi_value:
        raise SchemaError(f"vector field '{vector.name}' must have multi_value: true", vpath)

    params = index.get("parameters") or {}
    pp = f"{ip}.parameters"
    if not isinstance(params, dict):
        raise SchemaError("parameters must be an object", pp)
    dimension = _positive_int(params.get("dimension"), f"{pp}.dimension", required=True)
    distance = _enum(DistanceType, params.get("distance_type", "SquaredEuclidean"), f"{pp}.distance_type")
    index_type = _enum(
        VectorIndexType, params.get("vector_index_type", "HNSW"), f"{pp}.vector_index_type"
    )
    build = _json_param(params, "build_index_params", pp)
    search = _json_param(params, "search_index_params", pp)

    qc = hnsw = None
    if index_type is VectorIndexType.QC:
        qc = _qc_params(build, search, pp)
    elif index_type in (VectorIndexType.HNSW, VectorIndexType.QGRAPH):
        hnsw = _hnsw_params(build, search, pp)
    return VectorIndexSpec(
        name=str(index.get("index_name") or vector.name),
        pk_field=names[0],
        vector_field=vector.name,
        dimension=dimension,
        distance=distance,
        index_type=index_type,
        qc=qc,
        hnsw=hnsw,
        build_params=build,
        search_params=search,
        embedding_delimiter=str(params.get("embedding_delimiter", ",")) or ",",
        linear_build_threshold=_positive_int(
            params.get("linear_build_threshold", 5000), f"{pp}.linear_build_threshold", zero_ok=True
        ),
        min_scan_doc_cnt=_positive_int(
            params.get("min_scan_doc_cnt", 20000), f"{pp}.min_scan_doc_cnt", zero_ok=True
        ),
        is_embedding_saved=_as_bool(params.get("is_embedding_saved", True), f"{pp}.is_embedding_saved"),
        enable_rt_build=_as_bool(params.get("enable_rt_build", False), f"{pp}.enable_rt_build"),
        major_order=params.get("major_order"),
        raw_parameters=dict(params),
    )


def _qc_params(build: dict, search: dict, pp: str) -> QcParams:
    bp = f"{pp}.build_index_params"
    raw_centroids = build.get("proxima.qc.builder.centroid_count")
    return QcParams(
        centroid_count=_centroids(raw_centroids, f"{bp}.proxima.qc.builder.centroid_count"),
        centroid_count_raw=None if raw_centroids is None else str(raw_centroids),
        quantizer=build.get("proxima.qc.builder.quantizer_class"),
        train_sample_count=_opt_int(build.get("proxima.qc.builder.train_sample_count"),
                                    f"{bp}.proxima.qc.builder.train_sample_count"),
        train_sample_ratio=_ratio(build.get("proxima.qc.builder.train_sample_ratio"),
                                  f"{bp}.proxima.qc.builder.train_sample_ratio"),
        scan_ratio=_ratio(search.get("proxima.qc.searcher.scan_ratio"),
                          f"{pp}.search_index_params.proxima.qc.searcher.scan_ratio") or 0.01,
        brute_force_threshold=_opt_int(search.get("proxima.qc.searcher.brute_force_threshold"),
                                       f"{pp}.search_index_params.proxima.qc.searcher.brute_force_threshold"),
    )


def _hnsw_params(build: dict, search: dict, pp: str) -> HnswParams:
    def pick(d: dict, suffix: str):
        for prefix in ("proxima.hnsw.", "proxima.qgraph."):
            if prefix + suffix in d:
                return d[prefix + suffix], prefix + suffix
        return None, "proxima.hnsw." + suffix

    neighbors, nk = pick(build, "builder.max_neighbor_count")
    efc, ek = pick(build, "builder.efconstruction")
    ef, sk = pick(search, "searcher.ef")
    quantizer, _ = pick(build, "builder.quantizer_class")
    return HnswParams(
        max_neighbor_count=_opt_int(neighbors, f"{pp}.build_index_params.{nk}") or 100,
        ef_construction=_opt_int(efc, f"{pp}.build_index_params.{ek}") or 500,
        ef_search=_opt_int(ef, f"{pp}.search_index_params.{sk}") or 500,
        quantizer=quantizer,
    )


# --------------------------------------------------------------------------- scalars


def _json_param(params: dict, key: str, pp: str) -> dict:
    raw = params.get(key)
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise SchemaError(f"{key} must be a JSON object inside a string", f"{pp}.{key}")
    value = _json_in_string(raw, f"{pp}.{key}")
    if not isinstance(value, dict):
        raise SchemaError(f"{key} must hold a JSON object", f"{pp}.{key}")
    return value


def _json_in_string(raw: str, path: str) -> Any:
    try:
        return safejson.loads(raw)
    except safejson.JsonError as exc:
        raise SchemaError(f"malformed JSON inside string: {exc.msg} at character {exc.pos}", path) from None


def _enum(enum_cls, raw: Any, path: str):
    for member in enum_cls:
        if str(raw).lower() == member.value.lower():
            return member
    allowed = ", ".join(m.value for m in enum_cls)
    raise SchemaError(f"unknown value '{raw}' (expected one of {allowed})", path)


def _positive_int(raw: Any, path: str, *, required: bool = False, zero_ok: bool = False) -> int:
    if raw is None or raw == "":
        if required:
            raise SchemaError("missing: a positive integer is required", path)
        return 0
    value = _opt_int(raw, path)
    if value is None or value < (0 if zero_ok else 1):
        raise SchemaError(f"'{raw}' is not a {'non-negative' if zero_ok else 'positive'} integer", path)
    return value


def _opt_int(raw: Any, path: str) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise SchemaError(f"'{raw}' is not an integer", path)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw.strip())
    raise SchemaError(f"'{raw}' is not an integer", path)


def _centroids(raw: Any, path: str) -> int | None:
    """'1000' → 1000; '100*100' (two-level) → 10000; absent or '0' → automatic."""
    if raw is None or raw == "":
        return None
    parts = str(raw).split("*")
    counts = [_opt_int(p.strip(), path) for p in parts]
    if any(c is None or c < 0 for c in counts):
        raise SchemaError(f"'{raw}' is not a centroid count like '1000' or '100*100'", path)
    total = math.prod(counts)
    return total or None


def _ratio(raw: Any, path: str) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SchemaError(f"'{raw}' is not a number", path) from None
    if not 0 < value <= 1:
        raise SchemaError(f"'{raw}' must be in (0, 1]", path)
    return value


def _as_bool(raw: Any, path: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    raise SchemaError(f"'{raw}' is not true or false", path)
