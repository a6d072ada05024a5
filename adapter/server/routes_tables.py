"""Table management under ``/openapi/ha3/instances/{instance}/tables`` (the vector SDK's
``list_tables``, ``get_table``, ``create_table``, ``modify_table``, ``delete_table``,
``reindex``, ``list_table_generations``, ``get_table_generation``, ``list_tasks``).

Responses are Alibaba OpenAPI style ``{"requestId": ..., "result": ...}``. Create accepts
``{"name": ..., "schema": <HA3 schema JSON, object or string>}`` (the schema as uploaded
to HA3) or the SDK's ``CreateTableRequest`` map (fieldSchema/primaryKey/vectorIndex/
dataProcessConfig), translated by ``adapter.server.sdk_tables``. A created table is usable
by push and query at once.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request

from adapter.errors import ConflictError, NotFoundError, QueryError
from adapter.schema.model import TableSpec
from adapter.server import docs
from adapter.server.auth import reader, writer
from adapter.server.common import ServedRuntime, json_body, offload

router = APIRouter(prefix="/openapi/ha3/instances/{instance}", tags=["tables"])

# HA3's field types as the OpenAPI reports them (multi-value FLOAT is the vector).
def _field_type(f) -> str:
    t = f.type.value if hasattr(f.type, "value") else str(f.type)
    return f"MULTI_{t}" if f.multi_value else t


def table_view(spec: TableSpec, doc_count: int | None = None, shards: int = 1, replicas: int = 0) -> dict[str, Any]:
    """HA3's table object; partitionCount is the index's shard count (one on the embedded engine)."""
    vi = spec.vector_index
    dist = spec.distance.value if hasattr(spec.distance, "value") else str(spec.distance)
    itype = vi.index_type.value if hasattr(vi.index_type, "value") else str(vi.index_type)
    view = {
        "name": spec.name,
        "status": "IN_USE",
        "indexStatus": "IN_USE",
        "primaryKey": spec.primary_key,
        "partitionCount": shards,
        "replicaCount": replicas,
        "dataProcessorCount": 0,
        "fieldSchema": {f.name: _field_type(f) for f in spec.fields},
        "vectorIndex": [{
            "indexName": getattr(vi, "name", spec.vector_field),
            "vectorField": spec.vector_field,
            "dimension": str(spec.dimension),
            "distanceType": dist,
            "vectorIndexType": itype,
        }],
        "rawSchema": json.dumps(spec.public_dict(), ensure_ascii=False),
    }
    if spec.embedding is not None:
        emb = spec.embedding
        view["dataProcessConfig"] = [{
            "srcField": emb.source_field, "operator": "vectorization", "dstField": spec.vector_field,
            "params": {"vectorModel": emb.model, "vectorModal": emb.modal},
        }]
    if doc_count is not None:
        view["docCount"] = doc_count
    return view


def _ok(request: Request, result: Any) -> dict:
    return {"requestId": request.state.request_id, "result": result}


def _check_instance(request: Request, instance: str) -> None:
    expected = request.app.state.settings.instance_id
    if expected not in ("*", instance):
        raise NotFoundError(f"no instance '{instance}' (this service is '{expected}')", "path instance")


@router.get("/tables", summary="list tables")
async def list_tables(instance: str, request: Request, runtime: ServedRuntime, _=Depends(reader)) -> dict:
    _check_instance(request, instance)
    names = await offload(runtime.engine.list_tables)
    return _ok(request, [{"name": n, "status": "IN_USE", "indexStatus": "IN_USE"} for n in sorted(names)])


@router.get("/tables/{table}", summary="get a table")
async def get_table(instance: str, table: str, request: Request, runtime: ServedRuntime, _=Depends(reader)) -> dict:
    _check_instance(request, instance)
    rt = runtime

    def work():
        spec, stats = rt.engine.get_spec(table), rt.engine.stats(table)
        return table_view(spec, stats.doc_count, stats.extra.get("shards", 1), stats.extra.get("replicas", 0))

    return _ok(request, await offload(work))


def _schema_from_body(body: dict) -> tuple[str, Any]:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise QueryError("'name' (the table name) is required", "$.name")
    if "schema" in body:
        schema = body["schema"]
        if not isinstance(schema, (dict, str)):
            raise QueryError("'schema' must be the HA3 schema JSON (object or string)", "$.schema")
        return name, schema
    if "fieldSchema" in body:
        from adapter.server.sdk_tables import sdk_request_to_schema
        return name, sdk_request_to_schema(body)
    raise QueryError("body needs 'schema' (the HA3 schema JSON) or the SDK's 'fieldSchema'/'vectorIndex'",
                     "$.schema")


def _dry_run(request: Request) -> bool:
    return request.query_params.get("dryRun", "false").lower() in ("true", "1")


@router.post("/tables", summary="create a table from an HA3 schema", openapi_extra=docs.body(docs.CreateTableBody))
async def create_table(instance: str, request: Request, runtime: ServedRuntime, _=Depends(writer)) -> dict:
    _check_instance(request, instance)
    body = await json_body(request)
    name, schema = _schema_from_body(body)
    rt = runtime

    def work():
        if _dry_run(request):
            spec = rt.parse_schema(schema, name)
            if name in rt.engine.list_tables():
                raise ConflictError(f"table '{name}' already exists", "$.name")
            return table_view(spec)
        return table_view(rt.create_table(name, schema), 0)

    return _ok(request, await offload(work))


@router.put("/tables/{table}", summary="modify a table (new schema; empty tables switch at once)",
            openapi_extra=docs.body(docs.CreateTableBody))
async def modify_table(instance: str, table: str, request: Request, runtime: ServedRuntime, _=Depends(writer)) -> dict:
    _check_instance(request, instance)
    body = await json_body(request)
    body.setdefault("name", table)
    name, schema = _schema_from_body(body)
    if name != table:
        raise QueryError(f"'name' {name!r} differs from the table in the path {table!r}", "$.name")
    rt = runtime

    def work():
        spec = rt.parse_schema(schema, table)
        rt.engine.get_spec(table)  # 404 for unknown tables
        if _dry_run(request):
            return table_view(spec)
        if rt.engine.count(table) > 0:
            raise ConflictError(f"table '{table}' holds documents: changing its schema needs a rebuild "
                                "from its source (POST .../reindex with a pipeline) after modify on an "
                                "empty table, or drop and create it", "$.schema")
        gen = rt.engine.begin_generation(table, spec)
        rt.engine.switch_generation(table, gen)
        rt.secrets.put_spec(spec)
        rt.store_schema(table, schema)  # what a later reindex rebuilds with
        return table_view(spec, 0)

    return _ok(request, await offload(work))


@router.delete("/tables/{table}", summary="delete a table")
async def delete_table(instance: str, table: str, request: Request, runtime: ServedRuntime, _=Depends(writer)) -> dict:
    _check_instance(request, instance)
    await offload(runtime.drop_table, table)
    return _ok(request, {})


@router.get("/tables/{table}/index_versions", summary="list index generations")
async def index_versions(instance: str, table: str, request: Request, runtime: ServedRuntime, _=Depends(reader)) -> dict:
    _check_instance(request, instance)
    gens = await offload(runtime.engine.generations, table)
    return _ok(request, [_gen_view(g) for g in gens])


@router.get("/tables/{table}/index_versions/{generation}", summary="get one index generation")
async def index_version(instance: str, table: str, generation: str, request: Request, runtime: ServedRuntime, _=Depends(reader)) -> dict:
    _check_instance(request, instance)
    gens = await offload(runtime.engine.generations, table)
    for g in gens:
        if str(g.get("generation")) == generation:
            return _ok(request, _gen_view(g))
    raise NotFoundError(f"table '{table}' has no index version '{generation}'", "path generation")


def _gen_view(g: dict) -> dict:
    return {"generationId": g.get("generation"), "live": g.get("live"), "docCount": g.get("doc_count"),
            "createTime": g.get("created")}


# -- reindex and tasks ---------------------------------------------------------------------

@router.post("/tables/{table}/reindex", summary="rebuild a table from a stored pipeline (runs as a task)",
             openapi_extra=docs.body(docs.ReindexBody))
async def reindex(instance: str, table: str, request: Request, runtime: ServedRuntime, _=Depends(writer)) -> dict:
    """Body ``{"pipeline": "<name>"}`` runs ``<data dir>/pipelines/<name>.json`` (default: the
    table's own name); see adapter.ingest.service_pipeline for why no inline definitions."""
    _check_instance(request, instance)
    body = await json_body(request)
    rt = runtime

    def work():
        from adapter.ingest.image_stores import open_image_store
        from adapter.ingest.rebuild import rebuild
        from adapter.ingest.service_pipeline import load_service_pipeline, requested_name

        rt.engine.get_spec(table)
        pipeline = load_service_pipeline(rt, table, requested_name(table, body))
        open_image_store(pipeline, pipeline.load_spec(), rt.ingest_parts())  # refuse a disallowed store now, not in the task
        if rt.tasks.running(table) is not None:
            raise ConflictError(f"a rebuild of '{table}' is already running", "path table")
        task = rt.tasks.create("rebuild", table)
        rt.tasks.run_in_thread(task, lambda progress: rebuild(rt.ingest_parts(), pipeline, progress=progress))
        return task.to_dict()

    return _ok(request, await offload(work))


@router.get("/tasks", summary="list tasks (rebuilds) with progress")
async def list_tasks(instance: str, request: Request, runtime: ServedRuntime, table: str | None = None, _=Depends(reader)) -> dict:
    _check_instance(request, instance)
    return _ok(request, [t.to_dict() for t in runtime.tasks.list(table)])


@router.get("/tasks/{task_id}", summary="one task's status")
async def get_task(instance: str, task_id: str, request: Request, runtime: ServedRuntime, _=Depends(reader)) -> dict:
    _check_instance(request, instance)
    return _ok(request, runtime.tasks.get(task_id).to_dict())
