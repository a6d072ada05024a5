"""Start-up warm-up: what a service's first query would pay, paid before it says it is ready.

Models load lazily (the starter model's text tower on its first text), torch sets up on its
first forward pass, the query modules import and the engine opens a table's index files on
first use: together 0.3-15 s on the first query after start, measured with
bench/first_query.py. ``serve`` runs this in its lifespan (uvicorn accepts no connection
before it) and the demo before it prints its banner.
"""

from __future__ import annotations

import base64
import logging

from adapter.runtime import Runtime
from adapter.schema.model import TableSpec

log = logging.getLogger("adapter.server")
WARM_TEXT = "a photo"


def warm_up(runtime: Runtime) -> list[str]:
    """A text and an image through every model an existing table uses, then one text query
    per table through the HA query path; returns the models warmed. A model that fails is
    logged and skipped: its queries fail (503), not the service's start."""
    warm = getattr(runtime.embedder, "warm", None)
    if warm is None:
        return []
    specs = [runtime.engine.get_spec(table) for table in runtime.engine.list_tables()]
    specs = [spec for spec in specs if spec.embedding is not None]
    loaded = []
    for model in sorted({spec.embedding.model for spec in specs}):
        try:
            warm(model)
            loaded.append(model)
        except Exception as exc:  # a broken model fails its queries (503), not the whole service
            log.warning("model %s could not be loaded at startup: %s", model, exc)
    for spec in specs:
        if spec.embedding.model in loaded:
            first_query(runtime, spec)
    return loaded


def first_query(runtime: Runtime, spec: TableSpec) -> int:
    """One text query on ``spec``'s table, as a client sends it; the HTTP status it got."""
    from adapter.query.ha_service import answer_ha_query

    text = base64.b64encode(WARM_TEXT.encode()).decode()
    query = (f"config=hit:1,format:json&&query={spec.vector_index.name}:'{text}&modal=text&n=1'"
             f"&&cluster={spec.name}")
    _, status = answer_ha_query(query, runtime.engine, runtime.embedder)
    if status != 200:
        log.warning("warm-up query on table %s answered %s", spec.name, status)
    return status
