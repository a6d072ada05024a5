"""The vector SDK's ``CreateTableRequest`` map → an HA3 schema document.

The SDK describes a table as ``{name, primaryKey, fieldSchema: {field: TYPE},
vectorIndex: [{indexName, vectorField, dimension, distanceType, vectorIndexType,
advanceParams: {buildIndexParams, searchIndexParams, linearBuildThreshold,
minScanDocCnt}}], dataProcessConfig: [{srcField, operator, dstField, params:
{vectorModel, vectorModal, srcFieldConfig: {ossBucket, ossEndpoint, ...}}}]}``. We turn it
into the ``fields``/``indexs`` document HA3 schema authors upload, so one parser
(``adapter.schema.parse_schema``) validates both and names bad paths.
"""

from __future__ import annotations

from typing import Any

from adapter.errors import SchemaError


def sdk_request_to_schema(body: dict[str, Any]) -> dict[str, Any]:
    field_schema = body.get("fieldSchema")
    if not isinstance(field_schema, dict) or not field_schema:
        raise SchemaError("'fieldSchema' must map field names to types", "$.fieldSchema")
    pk = body.get("primaryKey")
    if not isinstance(pk, str) or pk not in field_schema:
        raise SchemaError("'primaryKey' must name a field of fieldSchema", "$.primaryKey")
    indexes = body.get("vectorIndex")
    if not isinstance(indexes, list) or not indexes or not isinstance(indexes[0], dict):
        raise SchemaError("'vectorIndex' must be a list with one vector index", "$.vectorIndex")
    vi = indexes[0]
    vfield = vi.get("vectorField")
    if vfield not in field_schema:
        raise SchemaError("vectorField must name a field of fieldSchema", "$.vectorIndex[0].vectorField")

    processing: dict[str, dict] = {}
    for i, proc in enumerate(body.get("dataProcessConfig") or []):
        if isinstance(proc, dict) and proc.get("dstField"):
            processing[proc["dstField"]] = proc

    fields = []
    for name, ftype in field_schema.items():
        t = str(ftype).upper()
        multi = t.startswith("MULTI_")
        field: dict[str, Any] = {"field_name": name, "field_type": t[6:] if multi else t}
        if multi or name == vfield:
            field["multi_value"] = True
        proc = processing.get(name)
        if proc is not None:
            params = proc.get("params") or {}
            field["user_defined_param"] = {
                "vector_model": params.get("vectorModel", "clip"),
                "vector_modal": params.get("vectorModal", "image"),
                "vector_source_field": proc.get("srcField"),
            }
        fields.append(field)
    for proc in processing.values():  # object-store settings live on the source field
        src_cfg = (proc.get("params") or {}).get("srcFieldConfig") or {}
        if src_cfg.get("ossBucket"):
            for field in fields:
                if field["field_name"] == proc.get("srcField"):
                    field["user_defined_param"] = {"content_type": "oss", "oss_bucket": src_cfg.get("ossBucket"),
                                                   "oss_endpoint": src_cfg.get("ossEndpoint", "")}

    adv = vi.get("advanceParams") or {}
    params = {
        "dimension": str(vi.get("dimension", "")),
        "distance_type": vi.get("distanceType", "SquaredEuclidean"),
        "vector_index_type": vi.get("vectorIndexType", "HNSW"),
        "embedding_delimiter": ",",
    }
    if adv.get("buildIndexParams"):
        params["build_index_params"] = adv["buildIndexParams"]
    if adv.get("searchIndexParams"):
        params["search_index_params"] = adv["searchIndexParams"]
    if adv.get("linearBuildThreshold"):
        params["linear_build_threshold"] = str(adv["linearBuildThreshold"])
    if adv.get("minScanDocCnt"):
        params["min_scan_doc_cnt"] = str(adv["minScanDocCnt"])
    return {
        "fields": fields,
        "indexs": [
            {"index_name": pk, "index_type": "PRIMARYKEY64", "index_fields": pk},
            {"index_name": vi.get("indexName") or vfield, "index_type": "CUSTOMIZED", "indexer": "aitheta2_indexer",
             "index_fields": [{"field_name": pk, "boost": 1}, {"field_name": vfield, "boost": 1}],
             "parameters": params},
        ],
    }
