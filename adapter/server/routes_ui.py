"""The search page: static files, thumbnails, and the small overview the page reads.

``include_ui(app)`` adds everything; the page itself searches through the service's
public HA3 endpoints, so what it shows is what any client gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from adapter.server import thumbnails
from adapter.server.auth import reader
from adapter.runtime import Runtime
from adapter.server.common import ServedRuntime, add_routes, offload

STATIC_DIR = Path(__file__).resolve().parent / "static"
THUMBNAIL_MAX_AGE_S = 3600

router = APIRouter()


@router.get("/ui/thumbnail/{table}/{pk}", tags=["ui"])
async def thumbnail(table: str, pk: str, request: Request, runtime: ServedRuntime, size: int = 256,
                    _=Depends(reader)) -> Response:
    """A resized JPEG of one document's source image (object store or Base64 field).

    ``private``: the image is behind auth, so shared caches must not keep it.
    """
    def work() -> Response:
        spec = runtime.engine.get_spec(table)
        data, tag = thumbnails.read_source_image(runtime, spec, pk)
        etag = f'"{tag}-{size}"'
        headers = {"Cache-Control": f"private, max-age={THUMBNAIL_MAX_AGE_S}", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(thumbnails.make_thumbnail(data, size), media_type="image/jpeg", headers=headers)

    return await offload(work)


def stored_pipeline(runtime: Runtime, table: str) -> str | None:
    """The name of the table's stored pipeline (``<state dir>/pipelines/<table>.json``), which
    the admin view's Rebuild button asks the reindex endpoint to run; None without one. Only
    the name: its paths, endpoints and keys are the operator's business, not a reader's."""
    from adapter.ingest.service_pipeline import pipeline_file

    return table if pipeline_file(Path(runtime.settings.state_dir), table) is not None else None


def table_summary(runtime: Runtime, name: str) -> dict[str, Any]:
    spec = runtime.engine.get_spec(name)
    stats = runtime.engine.stats(name)
    try:
        generations = runtime.engine.generations(name)
    except Exception:  # a summary must not fail because one engine lacks history
        generations = []
    return {
        "name": name,
        "primary_key": spec.primary_key,
        "vector_field": spec.vector_field,
        "vector_index": spec.vector_field,
        "dimension": spec.dimension,
        "distance": spec.distance.value,
        "higher_is_better": spec.distance.higher_is_better,
        "index_type": spec.vector_index.index_type.value,
        "model": spec.embedding.model if spec.embedding else None,
        "doc_count": stats.doc_count,
        "shards": stats.extra.get("shards", 1),
        "replicas": stats.extra.get("replicas", 0),
        "generation": stats.generation,
        "generations": generations,
        "pipeline": stored_pipeline(runtime, name),
    }


@router.get("/ui/api/tables", tags=["ui"])
async def ui_tables(runtime: ServedRuntime, principal=Depends(reader)) -> dict[str, Any]:
    """Tables with what the page needs: index name, distance, counts, generations."""

    def work() -> list[dict[str, Any]]:
        return [table_summary(runtime, name) for name in sorted(runtime.engine.list_tables())]

    return {"tables": await offload(work), "user": principal.username,
            "instance_id": runtime.settings.instance_id}


@router.get("/ui/api/tasks", tags=["ui"])
async def ui_tasks(runtime: ServedRuntime, _=Depends(reader)) -> dict[str, Any]:
    """Rebuild and push tasks, newest first (the admin view's progress bars poll this)."""
    tasks = [t.to_dict() for t in runtime.tasks.list()]
    tasks.sort(key=lambda t: t.get("created") or 0, reverse=True)
    return {"tasks": tasks}


@router.post("/ui/api/sign-out", tags=["ui"], status_code=204)
async def ui_sign_out() -> Response:
    """The page's sign-out. No credentials needed: it only tells this browser to forget. The
    page drops its own state; Clear-Site-Data asks the browser to drop its HTTP cache for
    this origin (thumbnails are cached privately for an hour) and the origin's storage."""
    return Response(status_code=204, headers={"Clear-Site-Data": '"cache", "storage"'})


def include_ui(app: FastAPI) -> None:
    """Add the page to an app: ``/`` and ``/ui`` lead to it; assets under ``/ui/static``."""
    add_routes(app, router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/ui", include_in_schema=False)
    def ui_no_slash() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/ui/", include_in_schema=False)
    def ui_index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
