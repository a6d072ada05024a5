"""Property-based API fuzzing from our own OpenAPI document: no input may cause a 500,
and every response must conform to the documented schema."""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (test extra) not installed")
from hypothesis import HealthCheck, settings  # noqa: E402

from _server_support import ADMIN, basic, make_settings, push_body, seed_schema  # noqa: E402


def _build_app(data_dir: Path):
    from fastapi.testclient import TestClient

    from adapter.embed.testing import make_tiny_clip
    from adapter.runtime import Runtime
    from adapter.server.app import create_app

    runtime = Runtime.from_settings(make_settings(data_dir, make_tiny_clip(data_dir / "clip", dim=512)))
    app = create_app(runtime)
    with TestClient(app) as c:
        assert c.post("/openapi/ha3/instances/ha3-adapter/tables", headers=basic(ADMIN),
                      json={"name": "images", "schema": seed_schema()}).status_code == 200
        assert c.post("/update/images/actions/bulk", headers=basic(ADMIN), json=push_body(3)).status_code == 200
    return app


# Built at collection: schemathesis's fixture-based schema (schemathesis.pytest.from_fixture)
# breaks on pytest 9 ('Function' object has no attribute '_nodeid'); a module-level schema
# is the form its pytest plugin supports on every version.
_data_dir = tempfile.TemporaryDirectory(prefix="ha3-fuzz-")
atexit.register(_data_dir.cleanup)
schema = schemathesis.openapi.from_asgi("/openapi.json", _build_app(Path(_data_dir.name)))
# Valid and invalid requests alike (wrong types, missing fields, out-of-range values).
schema.config.generation.update(modes=list(schemathesis.GenerationMode))
_TABLE_KEYS = ("table", "data_source", "index", "tableName")


@schema.hook("flatmap_case")
def _half_name_the_filled_table(context, case):
    """Random table names all end at a 404; half the cases name the table the app holds,
    so the fuzz reaches parsing, planning and the engine."""
    from hypothesis import strategies as st

    if case.operation.method.upper() == "DELETE":
        return st.just(case)  # never the filled table itself
    other = case.operation.Case(**{k: getattr(case, k) for k in ("path_parameters", "query", "headers", "body",
                                                                  "media_type")})
    for key in _TABLE_KEYS:
        if isinstance(other.path_parameters, dict) and key in other.path_parameters:
            other.path_parameters = {**other.path_parameters, key: "images"}
    if isinstance(other.body, dict) and "tableName" in other.body:
        other.body = {**other.body, "tableName": "images"}
    return st.sampled_from([case, other])


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "10")), deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    response = case.call(headers=basic(ADMIN))
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
