"""Request-body schemas for the OpenAPI document.

Handlers read bodies themselves (to answer bad JSON in each client's error format), so
FastAPI cannot infer the bodies; we document them here from the same pydantic models the
handlers validate with, so API users (and schemathesis) see the real shapes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

REF = "#/components/schemas/{model}"
_COMPONENTS: dict[str, Any] = {}


class HAQueryBody(BaseModel):
    assemblyQuery: str = Field(description="the whole HA query string: config=...&&query=...&&cluster=...")


class PushCommand(BaseModel):
    cmd: str = Field(description="add | delete")
    fields: dict[str, Any]


class CreateTableBody(BaseModel):
    name: str
    schema_: dict[str, Any] | str = Field(alias="schema", description="the HA3 schema JSON as uploaded")


class ReindexBody(BaseModel):
    pipeline: str | None = Field(None, description="name of a pipeline stored on the server at "
                                                  "<data dir>/pipelines/<name>.json (default: the table's name)")


def _register(model: type[BaseModel]) -> dict:
    schema = model.model_json_schema(ref_template=REF, by_alias=True)
    for name, sub in schema.pop("$defs", {}).items():
        _COMPONENTS.setdefault(name, sub)
    _COMPONENTS.setdefault(model.__name__, schema)
    return {"$ref": REF.format(model=model.__name__)}


def body(model: type[BaseModel] | None = None, *, array_of: type[BaseModel] | None = None) -> dict:
    """``openapi_extra`` declaring a required JSON request body of ``model`` (or an array)."""
    schema = _register(model) if model is not None else {"type": "array", "items": _register(array_of)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def install(app) -> None:
    """Add the registered body schemas to the generated document's components."""
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        doc = original()
        doc.setdefault("components", {}).setdefault("schemas", {}).update(_COMPONENTS)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi
