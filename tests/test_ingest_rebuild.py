"""Full rebuilds into the embedded engine: object store (moto S3) + tables, Base64 tables,
faults (missing objects, 500s, timeouts, corrupt images, engine rejection), a killed
rebuild resumed from its checkpoint, and pushes journaled during a rebuild."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapter.errors import ConfigError
from adapter.ingest.pipeline import PipelineConfig
from adapter.ingest.push import apply_push
from adapter.ingest.parts import IngestParts
from adapter.ingest.rebuild import RebuildCancelled, rebuild, sample_size
from ingest_fixtures import (CORRUPT_JPEG, S3_KEY, S3_SECRET, CountingEmbedder, RejectingEngine, b64,  # noqa: F401
                             embedder, engine, fault_hook, no_retry_sleep, photo_paths, png_bytes, s3_bucket,
                             s3_server, tiny_registry)

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"


def _pipeline(tmp_path, table_rows, *, schema="image_search_oss.json", image=None, fmt="jsonl",
              linear_build_threshold=None, **extra):
    """A pipeline over ``table_rows``; ``linear_build_threshold`` overrides the schema's (5000),
    e.g. to make a small Qc table big enough to train its IVF index."""
    table_file = tmp_path / f"items.{fmt}"
    if fmt == "jsonl":
        table_file.write_text("".join(json.dumps(r) + "\n" for r in table_rows))
    else:
        pq.write_table(pa.Table.from_pylist(table_rows), table_file)
    schema_file = MAPPINGS / schema
    if linear_build_threshold is not None:
        doc = json.loads(schema_file.read_text())
        for index in doc["indexs"]:
            if "linear_build_threshold" in index.get("parameters", {}):
                index["parameters"]["linear_build_threshold"] = str(linear_build_threshold)
        schema_file = tmp_path / schema
        schema_file.write_text(json.dumps(doc))
    data = {"table": extra.pop("table", "items"), "schema": str(schema_file),
            "source": {"table": {"path": table_file.name}, "image": image or {"kind": "base64"}},
            "checkpoint_dir": "state", "batch_size": 4, "concurrency": 4, **extra}
    return PipelineConfig.from_dict(data, base_dir=tmp_path)


def _s3_image(endpoint, bucket):
    return {"kind": "object_store", "object_store": {
        "endpoint": endpoint, "bucket": bucket, "addressing_style": "path",
        "access_key_id": S3_KEY, "access_key_secret": S3_SECRET, "max_attempts": 2}}


def _report_lines(report):
    return [json.loads(line) for line in Path(report.report_file).read_text().splitlines() if line.strip()]


def test_object_store_table_rebuild_with_faults(tmp_path, s3_bucket, engine, embedder, no_retry_sleep):
    endpoint, bucket, client = s3_bucket
    photos = photo_paths("fashion-10k", 6)
    rows = []
    for i, photo in enumerate(photos, start=1):
        key = f"Test image/image/{photo.name}"
        client.put_object(Bucket=bucket, Key=key, Body=photo.read_bytes())
        rows.append({"id": i, "cate_id": i % 3, "vector_source_image": "/" + key})
    client.put_object(Bucket=bucket, Key="Test image/image/corrupt.jpg", Body=CORRUPT_JPEG)
    client.put_object(Bucket=bucket, Key="Test image/image/down.png", Body=png_bytes(1))
    client.put_object(Bucket=bucket, Key="Test image/image/slow.png", Body=png_bytes(2))
    rows += [
        {"id": 101, "cate_id": 1, "vector_source_image": "/Test image/image/gone.png"},  # missing object
        {"id": 102, "cate_id": 1, "vector_source_image": "/Test image/image/corrupt.jpg"},  # undecodable
        {"id": 103, "cate_id": 1, "vector_source_image": "/Test image/image/down.png"},  # 500 after retries
        {"id": 104, "cate_id": 1, "vector_source_image": "/Test image/image/slow.png"},  # timeout after retries
        {"id": 105, "cate_id": "not-a-number", "vector_source_image": "/x.png"},  # bad record
        {"id": 106, "cate_id": 2, "vector_source_image": ""},  # no image
    ]
    pipeline = _pipeline(tmp_path, rows, image=_s3_image(endpoint, bucket), linear_build_threshold=10)
    from adapter.ingest import rebuild as rebuild_module

    real_open = rebuild_module.open_image_store

    def open_with_faults(p, spec, runtime=None):
        store = real_open(p, spec, runtime)
        fault_hook(store.client, key_part="down.png", status=500)
        fault_hook(store.client, key_part="slow.png", timeout=True)
        return store

    rebuild_module.open_image_store = open_with_faults
    try:
        report = rebuild((engine, embedder), pipeline, progress="none")
    finally:
        rebuild_module.open_image_store = real_open

    assert (report.read, report.indexed, report.failed) == (12, 6, 6)
    assert report.reconciles and report.switched
    by_pk = {f.pk: f.reason for f in report.failures}
    assert by_pk == {101: "missing_object", 102: "undecodable_image", 103: "store_error", 104: "timeout",
                     105: "bad_record", 106: "missing_image"}
    assert {line["pk"]: line["reason"] for line in _report_lines(report)} == by_pk
    assert engine.count("items") == 6
    hits = engine.get("items", [1, 2, 101], output_fields=["cate_id", "vector_source_image"])
    assert [h.pk for h in hits] == [1, 2]
    assert hits[0].fields["vector_source_image"] == "/Test image/image/" + photos[0].name
    # Qc at 12 rows >= linear_build_threshold 10: trained on a sample per train_sample_ratio (0.5 of 12 rows).
    assert 0 < report.trained_on <= 6  # the sampled rows that embedded fine
    assert not (tmp_path / "state" / "items.checkpoint.json").exists()


def test_base64_parquet_table_and_ready_vectors(tmp_path, engine, embedder):
    rows = [{"id": i, "cate_id": i, "vector_source_image": b64(png_bytes(i))} for i in range(1, 9)]
    rows[2]["vector_source_image"] = "!!not base64!!"
    rows[5]["vector_source_image"] = b64(b"GIF89a-broken")
    pipeline = _pipeline(tmp_path, rows, schema="image_search_base64.json", fmt="parquet")
    report = rebuild((engine, embedder), pipeline, progress="none")
    assert (report.read, report.indexed, report.failed) == (8, 6, 2)
    assert {f.pk: f.reason for f in report.failures} == {3: "undecodable_image", 6: "undecodable_image"}
    assert engine.count("items") == 6

    # A table that already carries vectors (the vector column) is indexed without a model.
    dim = engine.get_spec("items").dimension
    vec_rows = [{"id": 1, "cate_id": 1, "vector": ",".join(["0.5"] * dim)},
                {"id": 2, "cate_id": 1, "vector": "1,2,3"}]
    (tmp_path / "v").mkdir()
    second = _pipeline(tmp_path / "v", vec_rows, schema="image_search_base64.json", table="vec")
    report = rebuild((engine, embedder), second, progress="none")
    assert (report.read, report.indexed, report.failed) == (2, 1, 1)
    assert report.failures[0].reason == "bad_vector" and report.failures[0].pk == 2
    vector = engine.get("vec", [1], include_vector=True)[0].vector
    assert np.allclose(vector, 0.5)


def test_engine_rejection_is_reported(tmp_path, engine, embedder):
    rows = [{"id": i, "cate_id": 1, "vector_source_image": b64(png_bytes(i))} for i in range(1, 7)]
    pipeline = _pipeline(tmp_path, rows, schema="image_search_base64.json")
    report = rebuild((RejectingEngine(engine, reject={4}), embedder), pipeline, progress="none")
    assert (report.read, report.indexed, report.failed) == (6, 5, 1)
    assert report.failures[0].pk == 4 and report.failures[0].reason == "engine_rejection"
    assert engine.count("items") == 5


def test_killed_rebuild_resumes_without_reembedding_or_duplicates(tmp_path, engine, embedder):
    rows = [{"id": i, "cate_id": i % 2, "vector_source_image": b64(png_bytes(i))} for i in range(1, 15)]
    rows[9]["vector_source_image"] = "corrupt!"  # id 10 fails: failures survive the resume too
    pipeline = _pipeline(tmp_path, rows, schema="image_search_base64.json", linear_build_threshold=10)
    counting = CountingEmbedder(embedder)
    crashing = RejectingEngine(engine, crash_on_upsert=3)  # dies writing the 3rd batch (rows 8..11)
    with pytest.raises(RuntimeError, match="simulated crash"):
        rebuild((crashing, counting), pipeline, progress="none")
    checkpoint = json.loads((tmp_path / "state" / "items.checkpoint.json").read_text())
    assert checkpoint["next_offset"] == 8 and checkpoint["read"] == 8
    gens = engine.generations("items")
    assert [g["live"] for g in gens] == [True, False]  # searches still see the old (empty) generation
    embedded_first = counting.images
    first_sample = checkpoint["trained_on"]

    counting2 = CountingEmbedder(embedder)
    report = rebuild((engine, counting2), pipeline, progress="none")
    assert report.resumed_from == 8 and report.generation == checkpoint["generation"]
    assert (report.read, report.indexed, report.failed) == (14, 13, 1)
    assert [f.pk for f in report.failures] == [10]
    # Only offsets 8..13 were processed again; 5 images embedded (id 10 is not Base64).
    assert counting2.images == 5
    assert embedded_first >= 8 and first_sample > 0
    assert engine.count("items") == 13
    assert len(_report_lines(report)) == 1


def test_small_qc_table_rebuilds_to_an_exact_index_below_linear_build_threshold(tmp_path, engine, embedder):
    """14 rows under the schema's linear_build_threshold (5000): no sample is embedded or trained,
    the new generation is searched exactly, as HA3 brute-forces a table that small."""
    rows = [{"id": i, "cate_id": i % 2, "vector_source_image": b64(png_bytes(i))} for i in range(1, 15)]
    counting = CountingEmbedder(embedder)
    report = rebuild((engine, counting), _pipeline(tmp_path, rows, schema="image_search_base64.json"), progress="none")
    assert report.switched and report.indexed == 14 and report.trained_on == 0
    assert counting.images == 14  # every row once: no training sample embedded besides
    stats = engine.stats("items")
    assert stats.index_type == "Qc" and stats.extra["trained"] is False


def test_ctrl_c_style_stop_then_resume(tmp_path, engine, embedder):
    rows = [{"id": i, "cate_id": 1, "vector_source_image": b64(png_bytes(i))} for i in range(1, 11)]
    pipeline = _pipeline(tmp_path, rows, schema="image_search_hnsw_ip.json")
    stop = threading.Event()

    def progress(snapshot):
        if snapshot["read"] >= 4:
            stop.set()

    with pytest.raises(RebuildCancelled):
        rebuild((engine, embedder), pipeline, progress=progress, stop=stop)
    report = rebuild((engine, embedder), pipeline, progress="none")
    assert report.resumed_from >= 4
    assert (report.read, report.indexed, report.failed) == (10, 10, 0)
    assert engine.count("items") == 10


def test_pushes_during_rebuild_are_replayed_into_new_generation(tmp_path, engine, embedder):
    rows = [{"id": i, "cate_id": 1, "vector_source_image": b64(png_bytes(i))} for i in range(1, 9)]
    pipeline = _pipeline(tmp_path, rows, schema="image_search_base64.json")
    parts = IngestParts(engine, embedder)
    rebuild(parts, pipeline, progress="none")  # generation 1 live with ids 1..8
    pushed = {}

    def progress(snapshot):
        if not pushed and snapshot["read"] >= 4:
            pushed["report"] = apply_push(parts, "items", [
                {"cmd": "add", "fields": {"id": 500, "cate_id": 7, "vector_source_image": b64(png_bytes(500))}},
                {"cmd": "delete", "fields": {"id": 8}},  # not yet re-read by the rebuild
                {"cmd": "add", "fields": {"id": 2, "cate_id": 9, "vector_source_image": b64(png_bytes(2))}},
            ])

    report = rebuild(parts, pipeline, progress=progress)
    assert pushed["report"].journaled and pushed["report"].failed == 0
    assert report.journal_replayed == 3
    assert engine.count("items") == 8  # 1..8 rebuilt, 8 deleted again by the replay, 500 added
    assert [h.pk for h in engine.get("items", [500, 8])] == [500]
    assert engine.get("items", [2], output_fields=["cate_id"])[0].fields["cate_id"] == 9  # push wins


def test_sample_size_follows_qc_params():
    from adapter.schema import load_schema_file

    spec = load_schema_file(MAPPINGS / "image_search_oss.json")  # ratio 0.5, count 3,000,000
    assert sample_size(spec, 1000, cap=50_000) == 500
    assert sample_size(spec, 1_000_000, cap=50_000) == 50_000
    assert sample_size(spec, 0, cap=10) == 0


def test_pipeline_files_parse(monkeypatch):
    for name in ("oss_table.yaml", "base64_table.yaml", "api_push.yaml"):
        config = PipelineConfig.from_yaml(ROOT / "pipelines" / name)
        assert config.schema_file.is_file(), name
        config.load_spec()
    monkeypatch.setenv("OSS_BUCKET", "from-env")
    oss = PipelineConfig.from_yaml(ROOT / "pipelines" / "oss_table.yaml")
    assert oss.source.image.object_store.bucket == "from-env"
    assert oss.source.table.partition.value == "20250331"
    with pytest.raises(ConfigError, match="source"):
        PipelineConfig.from_dict({"table": "t", "schema": "x.json", "source": {"bogus": 1}})


def test_api_push_pipeline_cannot_rebuild(tmp_path, engine, embedder):
    config = PipelineConfig.from_yaml(ROOT / "pipelines" / "api_push.yaml")
    with pytest.raises(ConfigError, match="source.table"):
        rebuild((engine, embedder), config, progress="none")


KILLED_CHILD = r"""
import sys, time
from adapter.engines.embedded import EmbeddedEngine
from adapter.ingest.pipeline import PipelineConfig
from adapter.ingest.rebuild import rebuild

class SlowEngine:  # slow writes, so the parent can kill us mid-run
    def __init__(self, inner): self.inner = inner
    def upsert(self, *a, **k):
        time.sleep(0.1)
        return self.inner.upsert(*a, **k)
    def __getattr__(self, name): return getattr(self.inner, name)

pipeline = PipelineConfig.from_yaml(sys.argv[1])
rebuild((SlowEngine(EmbeddedEngine(sys.argv[2])), None), pipeline, progress="log")
"""


def test_sigkilled_rebuild_process_resumes(tmp_path):
    """A real process killed with SIGKILL mid-rebuild; a new one resumes from the checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from adapter.engines.embedded import EmbeddedEngine

    dim = 512
    rng = np.random.default_rng(0)
    rows = [{"id": i, "cate_id": i % 5, "vector": ",".join(f"{x:.4f}" for x in rng.random(dim))} for i in range(300)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({
        "table": "killed", "schema": str(MAPPINGS / "image_search_hnsw_ip.json"),
        "source": {"table": {"path": "items.jsonl"}, "image": {"kind": "vector"}},
        "checkpoint_dir": "state", "batch_size": 5}))
    checkpoint = tmp_path / "state" / "killed.checkpoint.json"
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(tmp_path / "p.yaml"), str(tmp_path / "engine")],
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while done < 50 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                done = json.loads(checkpoint.read_text())["next_offset"]
            except (OSError, ValueError, KeyError):
                pass
        assert child.poll() is None, "the child finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    killed_at = json.loads(checkpoint.read_text())["next_offset"]
    assert 50 <= killed_at < 300

    engine = EmbeddedEngine(tmp_path / "engine")
    try:
        pipeline = PipelineConfig.from_yaml(tmp_path / "p.yaml")
        report = rebuild((engine, None), pipeline, progress="none")
        assert report.resumed_from == killed_at
        assert (report.read, report.indexed, report.failed) == (300, 300, 0)
        assert engine.count("killed") == 300  # nothing lost, nothing duplicated
        assert [g["live"] for g in engine.generations("killed")] == [True]
    finally:
        engine.close()


@pytest.mark.parametrize("mode", ["log", "bar"])
def test_progress_is_logged_or_drawn(tmp_path, engine, mode, caplog, capsys):
    rows = [{"id": i, "cate_id": 1, "vector": [0.1] * 512} for i in range(12)]
    pipeline = _pipeline(tmp_path, rows, schema="image_search_hnsw_ip.json", image={"kind": "vector"})
    with caplog.at_level("INFO", logger="adapter.ingest"):
        report = rebuild((engine, None), pipeline, progress=mode)
    assert (report.read, report.indexed) == (12, 12)
    if mode == "log":
        lines = [r.getMessage() for r in caplog.records]
        assert any(m.startswith("ingest start table=items") for m in lines)
        assert any("ingest progress table=items read=12 total=12 indexed=12 failed=0" in m for m in lines)
    else:
        assert "12/12" in capsys.readouterr().err


def test_watch_rebuilds_when_table_file_changes(tmp_path, engine):
    """Automatic reindexing: a changed table file triggers a new rebuild."""
    import os
    import time

    from adapter.ingest.rebuild import watch

    rows = [{"id": i, "cate_id": 1, "vector": [0.1] * 512} for i in range(3)]
    pipeline = _pipeline(tmp_path, rows, schema="image_search_hnsw_ip.json", image={"kind": "vector"})
    stop = threading.Event()
    reports = []

    def on_report(report):
        reports.append(report)
        if len(reports) == 1:  # the table grows: the watcher must notice and rebuild
            path = tmp_path / "items.jsonl"
            path.write_text(path.read_text() + json.dumps({"id": 9, "cate_id": 2, "vector": [0.2] * 512}) + "\n")
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        else:
            stop.set()

    assert watch((engine, None), pipeline, interval_s=0.05, progress="none", stop=stop, on_report=on_report) == 2
    assert [r.read for r in reports] == [3, 4] and engine.count("items") == 4


def test_api_rebuild_uses_schema_store_and_runtime_secrets(tmp_path, s3_bucket, engine, embedder, monkeypatch):
    """kind auto + an oss source field: the store comes from the schema, its keys from the
    service's SecretStore (the stored schema has them blanked)."""
    from types import SimpleNamespace

    from pydantic import SecretStr

    from adapter.schema.model import ObjectStoreSpec

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    endpoint, bucket, client = s3_bucket
    client.put_object(Bucket=bucket, Key="Test image/image/1.png", Body=png_bytes(1))
    schema = json.loads((MAPPINGS / "image_search_oss.json").read_text())
    schema["fields"][1]["user_defined_param"].update(oss_endpoint=endpoint, oss_bucket=bucket, oss_access_key="",
                                                     oss_secret="")
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    rows = [{"id": 1, "cate_id": 1, "vector_source_image": "/Test image/image/1.png"}]
    pipeline = _pipeline(tmp_path, rows, schema=str(tmp_path / "schema.json"), image={"kind": "auto"})
    secrets = SimpleNamespace(object_store=lambda table, field=None: ObjectStoreSpec(
        endpoint=endpoint, bucket=bucket, access_key_id=SecretStr(S3_KEY), access_key_secret=SecretStr(S3_SECRET)))
    runtime = IngestParts(engine, embedder, secrets=secrets)
    report = rebuild(runtime, pipeline, progress="none")
    assert (report.read, report.indexed, report.failed) == (1, 1, 0)


def test_second_rebuild_of_same_table_conflicts(tmp_path, engine):
    from adapter.errors import ConflictError

    rows = [{"id": i, "cate_id": 1, "vector": [0.1] * 512} for i in range(8)]
    pipeline = _pipeline(tmp_path, rows, schema="image_search_hnsw_ip.json", image={"kind": "vector"})
    seen = []

    def progress(snapshot):
        if not seen:
            with pytest.raises(ConflictError, match="already running"):
                rebuild((engine, None), pipeline, progress="none")
            seen.append(True)

    assert rebuild((engine, None), pipeline, progress=progress).indexed == 8 and seen
