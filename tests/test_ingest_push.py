"""HA3 push bodies into the live table; task registry; the rebuild CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from adapter.errors import NotFoundError
from adapter.ingest.push import apply_push
from adapter.ingest.parts import IngestParts
from adapter.ingest.tasks import TaskRegistry
from adapter.schema import load_schema_file, parse_schema
from adapter.sources.objectstore import open_store
from ingest_fixtures import (S3_KEY, S3_SECRET, b64, embedder, engine, png_bytes, s3_bucket, s3_server,  # noqa: F401
                             tiny_registry)

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"


@pytest.fixture
def parts(engine, embedder):
    engine.create_table(load_schema_file(MAPPINGS / "image_search_base64.json", "pushed"))
    return IngestParts(engine, embedder)


def test_push_add_replace_delete_and_vectors(parts):
    dim = parts.engine.get_spec("pushed").dimension
    report = apply_push(parts, "pushed", [
        {"cmd": "add", "fields": {"id": 1, "cate_id": 1, "vector_source_image": b64(png_bytes(1))}},
        {"cmd": "add", "fields": {"id": 2, "cate_id": 2, "vector_source_image": "data:image/png;base64," + b64(png_bytes(2))}},
        {"cmd": "add", "fields": {"id": 3, "cate_id": 3, "vector": ",".join(["0.25"] * dim)}},
        {"cmd": "add", "fields": {"id": 4, "cate_id": 4, "vector": [0.5] * dim}},
        {"cmd": "add", "fields": {"id": 1, "cate_id": 11, "vector_source_image": b64(png_bytes(1))}},  # replaces
        {"cmd": "delete", "fields": {"id": 2}},
        {"cmd": "delete", "fields": {"id": 999}},  # missing key: fine
    ])
    assert report.failed == 0 and (report.read, report.added, report.deleted) == (7, 5, 2)
    hits = {h.pk: h for h in parts.engine.get("pushed", [1, 2, 3, 4], output_fields=["cate_id"], include_vector=True)}
    assert sorted(hits) == [1, 3, 4]
    assert hits[1].fields["cate_id"] == 11
    assert np.allclose(hits[3].vector, 0.25) and np.allclose(hits[4].vector, 0.5)


def test_push_failures_are_per_document(parts):
    report = apply_push(parts, "pushed", [
        {"cmd": "add", "fields": {"id": 1, "cate_id": 1, "vector_source_image": b64(png_bytes(1))}},
        {"cmd": "add", "fields": {"id": 2, "cate_id": 1, "vector_source_image": "%%%"}},
        {"cmd": "add", "fields": {"id": 3, "cate_id": 1, "vector_source_image": b64(b"\x89PNG\r\n\x1a\n broken")}},
        {"cmd": "add", "fields": {"id": 4, "cate_id": 1, "vector": "1,2,3"}},
        {"cmd": "add", "fields": {"id": 5, "cate_id": "many"}},
        {"cmd": "update", "fields": {"id": 6}},
        {"cmd": "add", "fields": {"cate_id": 1}},
        "not an object",
    ])
    assert (report.read, report.added, report.failed) == (8, 1, 7)
    assert {f.pk: f.reason for f in report.failures if f.pk is not None} == {
        2: "undecodable_image", 3: "undecodable_image", 4: "bad_vector", 5: "bad_record", 6: "bad_record"}
    assert parts.engine.count("pushed") == 1
    with pytest.raises(NotFoundError):
        apply_push(parts, "nope", [])


def test_push_object_store_path(engine, embedder, s3_bucket):
    endpoint, bucket, client = s3_bucket
    client.put_object(Bucket=bucket, Key="Test image/image/10031.png", Body=png_bytes(7))
    engine.create_table(load_schema_file(MAPPINGS / "image_search_oss.json", "oss"))
    store = open_store({"endpoint": endpoint, "bucket": bucket, "addressing_style": "path",
                        "access_key_id": S3_KEY, "access_key_secret": S3_SECRET})
    report = apply_push(IngestParts(engine, embedder), "oss", [
        {"cmd": "add", "fields": {"id": 1, "cate_id": 1, "vector_source_image": "/Test image/image/10031.png"}},
        {"cmd": "add", "fields": {"id": 2, "cate_id": 1, "vector_source_image": "/Test image/image/none.png"}},
    ], store=store)
    assert report.added == 1 and [(f.pk, f.reason) for f in report.failures] == [(2, "missing_object")]


def test_task_registry_tracks_a_rebuild():
    registry = TaskRegistry()
    task = registry.create("rebuild", "items")
    callback = registry.progress_callback(task.id)
    registry.update(task.id, state="running")
    callback({"total": 10, "read": 5, "indexed": 4, "failed": 1, "generation": "g2",
              "failures": [{"pk": 3, "reason": "missing_object", "message": "gone"}]})
    status = registry.get(task.id).to_dict()
    assert status["progress"] == 0.5 and status["failed"] == 1 and status["errors"][0]["pk"] == 3
    assert registry.running("items").id == task.id
    registry.update(task.id, state="succeeded")
    assert registry.running("items") is None and registry.get(task.id).finished
    with pytest.raises(NotFoundError):
        registry.get("missing")

    class Result:
        def to_dict(self):
            return {"read": 2, "indexed": 2, "failed": 0}

    second = registry.create("rebuild", "other")
    registry.run_in_thread(second, lambda progress: Result()).join(timeout=10)
    assert registry.get(second.id).state == "succeeded" and registry.get(second.id).indexed == 2
    third = registry.create("rebuild", "other")
    registry.run_in_thread(third, lambda progress: 1 / 0).join(timeout=10)
    assert registry.get(third.id).state == "failed" and "ZeroDivisionError" in registry.get(third.id).message


def test_cli_rebuild(tmp_path, tiny_registry):
    from typer.testing import CliRunner

    from adapter.cli import app
    from adapter.embed.testing import tiny_clip_registry_config

    models = tmp_path / "models.yaml"
    clip_path = tiny_registry.spec("clip").path
    models.write_text(yaml.safe_dump(tiny_clip_registry_config(clip_path)))
    (tmp_path / "items.jsonl").write_text("".join(
        json.dumps({"id": i, "cate_id": 1, "vector_source_image": b64(png_bytes(i))}) + "\n" for i in range(3)))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({
        "table": "cli_items", "schema": str(MAPPINGS / "image_search_base64.json"),
        "source": {"table": {"path": "items.jsonl"}, "image": {"kind": "base64"}},
        "engine": {"kind": "embedded", "data_dir": "engine"}, "models_config": "models.yaml"}))
    result = CliRunner().invoke(app, ["rebuild", str(tmp_path / "p.yaml"), "--progress", "log"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert (summary["read"], summary["indexed"], summary["failed"]) == (3, 3, 0) and summary["switched"]
    bad = CliRunner().invoke(app, ["rebuild", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "cannot read pipeline file" in bad.output


def test_push_object_store_credentials_from_runtime_secrets(engine, embedder, s3_bucket, monkeypatch):
    """The service keeps oss credentials in its SecretStore; push reads them from there."""
    from types import SimpleNamespace

    from pydantic import SecretStr

    from adapter.schema.model import ObjectStoreSpec

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    endpoint, bucket, client = s3_bucket
    client.put_object(Bucket=bucket, Key="Test image/a b.png", Body=png_bytes(3))
    schema = json.loads((MAPPINGS / "image_search_oss.json").read_text())
    schema["fields"][1]["user_defined_param"].update(oss_endpoint=endpoint, oss_bucket=bucket, oss_access_key="",
                                                     oss_secret="")  # the keys live in the SecretStore
    engine.create_table(parse_schema(schema, "secret_oss"))
    asked = []

    def object_store(table, field=None):
        asked.append((table, field))
        return ObjectStoreSpec(endpoint=endpoint, bucket=bucket, access_key_id=SecretStr(S3_KEY),
                               access_key_secret=SecretStr(S3_SECRET))

    runtime = IngestParts(engine, embedder, secrets=SimpleNamespace(object_store=object_store))
    report = apply_push(runtime, "secret_oss", [
        {"cmd": "add", "fields": {"id": 9, "cate_id": 1, "vector_source_image": "/Test image/a b.png"}}])
    assert report.added == 1 and report.failed == 0
    assert asked == [("secret_oss", "vector_source_image")]
