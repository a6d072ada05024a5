"""``ha3-adapter demo --no-serve``: table from the seed schema, photos in, reuse on rerun."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from adapter.cli import app
from adapter.demo import SHIPPED_PHOTOS, folder_photos, shipped_photos


@pytest.fixture(scope="module")
def models_yaml(tmp_path_factory):
    from adapter.embed.testing import make_tiny_clip, tiny_clip_registry_config

    tmp = tmp_path_factory.mktemp("models")
    clip = make_tiny_clip(tmp / "clip")
    path = tmp / "models.yaml"
    path.write_text(yaml.safe_dump(tiny_clip_registry_config(clip)))
    return path


def test_installed_packages_ship_the_demo_photos():
    photos = shipped_photos()
    assert len(photos) == len(SHIPPED_PHOTOS), "scikit-image / scikit-learn sample photos missing"
    assert [p.pk for p in photos] == list(range(1, len(photos) + 1))
    assert {p.cate_id for p in photos} == {1, 2, 3, 4, 5}


def test_images_folder_subdirectories_become_categories(tmp_path):
    for sub, colour in (("cats", "red"), ("dogs", "blue")):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (20, 20), colour).save(tmp_path / sub / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    photos = folder_photos(tmp_path)
    assert [(p.pk, p.cate_id) for p in photos] == [(1, 1), (2, 2)]


def test_demo_ingests_then_reuses_its_data_dir(tmp_path, models_yaml):
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate(("red", "green", "blue", "white", "black")):
        Image.new("RGB", (40 + i, 30), colour).save(images / f"{i}.jpg")
    args = ["demo", "--no-serve", "--data-dir", str(tmp_path / "data"), "--images", str(images),
            "--models", str(models_yaml)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output.strip().splitlines()[-1])
    assert summary["created"] is True and summary["ingested"] == 5 and summary["doc_count"] == 5
    assert oct((tmp_path / "data" / "demo-user.json").stat().st_mode & 0o777) == "0o600"

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    summary = json.loads(second.output.strip().splitlines()[-1])
    assert summary["created"] is False and summary["ingested"] == 0 and summary["doc_count"] == 5
    assert "reused" in second.output


def test_demo_rejects_a_missing_images_folder(tmp_path, models_yaml):
    result = CliRunner().invoke(app, ["demo", "--no-serve", "--data-dir", str(tmp_path / "d"),
                                      "--images", str(tmp_path / "nope"), "--models", str(models_yaml)])
    assert result.exit_code == 2
    assert "--images" in result.output and "Traceback" not in result.output


@pytest.mark.opensearch
def test_demo_on_opensearch_answers_as_on_the_embedded_engine(tmp_path, models_yaml):
    """`ha3-adapter demo --opensearch URL` against the live node: the same 19 photos, and the
    same top 3 for every photo's caption as the demo on the embedded engine."""
    from fastapi.testclient import TestClient

    from _opensearch_support import raw_client, require_opensearch
    from adapter.demo import DEMO_TABLE, demo_password, demo_settings
    from adapter.runtime import Runtime
    from adapter.server.app import create_app

    url = require_opensearch()
    # The demo's table has a fixed name; the test node is disposable, so start it afresh.
    node = raw_client()
    if node.indices.exists_alias(name=DEMO_TABLE):
        for index in node.indices.get_alias(name=DEMO_TABLE):
            node.indices.delete(index=index)
    runs = {"embedded": None, "opensearch": url}
    answers = {}
    for kind, opensearch in runs.items():
        data_dir = tmp_path / kind
        args = ["demo", "--no-serve", "--data-dir", str(data_dir), "--models", str(models_yaml)]
        result = CliRunner().invoke(app, args + (["--opensearch", opensearch] if opensearch else []))
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output.strip().splitlines()[-1])
        assert summary["ingested"] == summary["doc_count"] == len(SHIPPED_PHOTOS), summary
        settings = demo_settings(data_dir, opensearch=opensearch, port=0, models=models_yaml,
                                 password=demo_password(data_dir))
        runtime = Runtime.from_settings(settings)
        try:
            with TestClient(create_app(runtime)) as client:
                token = base64.b64encode(f"{settings.users[0].username}:{demo_password(data_dir)}".encode()).decode()
                answers[kind] = []
                for *_, caption in SHIPPED_PHOTOS:
                    text = base64.b64encode(caption.encode()).decode()
                    r = client.post("/query", headers={"Authorization": f"Basic {token}"}, json={
                        "assemblyQuery": f"config=hit:3,format:json&&query={DEMO_TABLE}:'{text}&modal=text&n=3'"})
                    assert r.status_code == 200 and r.json()["errors"] == [], r.text
                    answers[kind].append([str(i["fields"]["id"]) for i in r.json()["result"]["items"]])
        finally:
            runtime.close()
    assert all(len(top) == 3 for top in answers["opensearch"])
    assert answers["opensearch"] == answers["embedded"]


# -- the newcomer's path: a busy port, a ready banner, a rebuild, the same directory served --

@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, models_yaml):
    """A data directory as `ha3-adapter demo` leaves it (the 19 sample photos, tiny CLIP)."""
    data_dir = tmp_path_factory.mktemp("newcomer") / "ha3-demo-data"
    result = CliRunner().invoke(app, ["demo", "--no-serve", "--data-dir", str(data_dir), "--models", str(models_yaml)])
    assert result.exit_code == 0, result.output
    return data_dir


def demo_auth(data_dir) -> dict[str, str]:
    user = json.loads((data_dir / "demo-user.json").read_text())
    token = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def caption_top3(client, auth) -> list[list[str]]:
    """Top 3 ids for every shipped photo's caption, as the demo's HA query asks them."""
    from adapter.demo import DEMO_TABLE

    answers = []
    for *_, caption in SHIPPED_PHOTOS:
        text = base64.b64encode(caption.encode()).decode()
        r = client.post("/query", headers=auth, json={
            "assemblyQuery": f"config=hit:3,format:json&&query={DEMO_TABLE}:'{text}&modal=text&n=3'&&cluster=general"})
        assert r.status_code == 200 and r.json()["errors"] == [], r.text
        answers.append([str(i["fields"]["id"]) for i in r.json()["result"]["items"]])
    return answers


def served_settings(data_dir, models_yaml):
    """What `ha3-adapter serve --data-dir <demo dir>` loads (models from a config file)."""
    from adapter.config import Settings

    config = data_dir.parent / "serve.yaml"
    config.write_text(yaml.safe_dump({"models": str(models_yaml)}))
    return config, Settings.load(config, overrides={"data_dir": data_dir}, env={})


def test_admin_rebuild_of_the_demo_table_keeps_every_top3(demo_dir, models_yaml):
    """The page's Rebuild on the 19-photo Qc table stays below linear_build_threshold (5000):
    brute force as before, no IVF trained on a 10-vector sample, so no result changes."""
    import time

    from fastapi.testclient import TestClient

    from adapter.runtime import Runtime
    from adapter.server.app import create_app

    _, settings = served_settings(demo_dir, models_yaml)
    runtime = Runtime.from_settings(settings)
    auth = demo_auth(demo_dir)
    try:
        with TestClient(create_app(runtime)) as client:
            before = caption_top3(client, auth)
            generation = runtime.engine.stats("image_search").generation
            # exactly what the admin view's Rebuild button sends
            [table] = client.get("/ui/api/tables", headers=auth).json()["tables"]
            assert table["pipeline"], "the demo stores its pipeline where the Rebuild button finds it"
            r = client.post("/openapi/ha3/instances/demo/tables/image_search/reindex", headers=auth,
                            json={"pipeline": table["pipeline"]})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 300
            while (task := client.get("/ui/api/tasks", headers=auth).json()["tasks"][0])["state"] in (
                    "pending", "queued", "running"):
                assert time.monotonic() < deadline, task
                time.sleep(0.2)
            assert task["state"] == "succeeded", task
            stats = runtime.engine.stats("image_search")
            assert stats.generation != generation and stats.doc_count == len(SHIPPED_PHOTOS)
            assert caption_top3(client, auth) == before
            assert stats.extra["trained"] is False  # searched exactly, as before the rebuild
    finally:
        runtime.close()


ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``ha3-adapter ARGS`` in a child process of this checkout, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "adapter.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_demo_on_a_busy_port_says_so_before_printing_or_creating_anything(tmp_path, models_yaml):
    data_dir = tmp_path / "demo"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("demo", "--port", port, "--data-dir", data_dir, "--models", models_yaml)
    assert result.returncode == 2, result
    assert result.stdout == ""  # no login banner, no data directory line
    assert f"port {port}" in result.stderr and "already in use" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists()


def test_demo_warms_the_model_before_it_prints_the_ready_banner(tmp_path, models_yaml, monkeypatch):
    """The banner is what a user acts on: the model (text and image) is loaded and run once
    before it, so the first pasted query costs what the tenth does."""
    from adapter import demo
    from adapter.embed.service import EmbeddingService

    events: list[str] = []
    real_embed_text, real_embed_image = EmbeddingService.embed_text, EmbeddingService.embed_image

    def embed_text(self, model, text):
        events.append("embed text")
        return real_embed_text(self, model, text)

    def embed_image(self, model, data):
        events.append("embed image")
        return real_embed_image(self, model, data)

    monkeypatch.setattr(EmbeddingService, "embed_text", embed_text)
    monkeypatch.setattr(EmbeddingService, "embed_image", embed_image)
    served = []
    monkeypatch.setattr(demo, "serve_app", lambda app, listener: served.append(app) or events.append("serve"))
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), "red").save(images / "red.jpg")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.run_demo(data_dir=tmp_path / "data", images=images, port=port, models=models_yaml,
                  echo=lambda line: events.append("banner" if "Search page:" in line else "line"))
    assert events[-2:] == ["banner", "serve"], events
    before_banner = events[:events.index("banner")]
    assert "embed text" in before_banner and "embed image" in before_banner
    # the banner's login is verified already: the first pasted query pays no scrypt
    user = json.loads((tmp_path / "data" / "demo-user.json").read_text())
    token = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
    assert served[0].state.auth.cached(f"Basic {token}") is not None


def banner_command(data_dir, models_yaml, port: int, verb: str) -> tuple[dict[str, str], list[str]]:
    """The `ha3-adapter <verb>` line the demo's banner prints for carrying on without it:
    (its environment assignments, its arguments)."""
    import shlex

    from adapter.demo import examples

    user = json.loads((data_dir / "demo-user.json").read_text())
    text = examples(f"http://127.0.0.1:{port}", user["username"], user["password"], data_dir=data_dir,
                    models=models_yaml)
    [line] = [line for line in text.splitlines() if f"ha3-adapter {verb} " in line]
    words = shlex.split(line, comments=True)
    at = words.index("ha3-adapter")
    return dict(word.split("=", 1) for word in words[:at]), words[at + 2:]


def test_serve_opens_the_demo_data_dir_as_it_is(demo_dir, models_yaml):
    """The banner's `ha3-adapter serve --data-dir <the demo's directory>`: its table, its
    thumbnails (the bucket is inside), the stored pipeline for the Rebuild button; no faiss
    loader chatter."""
    import httpx

    user = json.loads((demo_dir / "demo-user.json").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assignments, args = banner_command(demo_dir, models_yaml, port, "serve")
    assert args == ["--data-dir", str(demo_dir), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **assignments}
    proc = subprocess.Popen([sys.executable, "-m", "adapter.cli", "serve", *args], env=env, cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    base, auth = f"http://127.0.0.1:{port}", (user["username"], user["password"])
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        [table] = httpx.get(f"{base}/ui/api/tables", auth=auth).json()["tables"]
        assert table["name"] == "image_search" and table["doc_count"] == len(SHIPPED_PHOTOS)
        assert table["pipeline"]
        text = base64.b64encode(b"a cat").decode()
        r = httpx.post(f"{base}/query", auth=auth, json={
            "assemblyQuery": f"config=hit:5,format:json&&query=vector:'{text}&modal=text&n=5'&&cluster=general"})
        assert r.status_code == 200 and len(r.json()["result"]["items"]) == 5, r.text
        thumb = httpx.get(f"{base}/ui/thumbnail/image_search/1", auth=auth)
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "Loading faiss" not in stderr and "faiss.loader" not in stderr, stderr
    assert f"Uvicorn running on http://127.0.0.1:{port}" in stderr  # said once it listens, as before


def test_rebuild_cli_accepts_the_demo_pipeline_file(demo_dir, models_yaml):
    """The banner's `ha3-adapter rebuild <demo dir>/pipelines/image_search.json`, no other
    argument: the table, its stored schema and the directory's engine come from where the
    file lies."""
    from adapter.engines.embedded import EmbeddedEngine

    engine = EmbeddedEngine(demo_dir)
    generation = engine.stats("image_search").generation
    engine.close()
    assignments, args = banner_command(demo_dir, models_yaml, 8080, "rebuild")
    assert args == [str(demo_dir / "pipelines" / "image_search.json")]
    result = run_cli("rebuild", *args, "--progress", "none", env=assignments)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["switched"] and report["read"] == report["indexed"] == len(SHIPPED_PHOTOS)
    assert report["generation"] != generation and report["trained_on"] == 0
    assert "Loading faiss" not in result.stderr


def test_rebuild_cli_with_data_dir_runs_a_pipeline_kept_elsewhere(demo_dir, models_yaml, tmp_path):
    """The same pipeline copied out of the data directory needs --data-dir to find its engine,
    and says so when it is missing."""
    copy = tmp_path / "image_search.json"
    copy.write_text((demo_dir / "pipelines" / "image_search.json").read_text())
    env = {"HA3_ADAPTER_MODELS": str(models_yaml)}
    missing = run_cli("rebuild", copy, "--progress", "none", env=env)
    assert missing.returncode == 2 and "--data-dir" in missing.stderr and "Traceback" not in missing.stderr
    result = run_cli("rebuild", copy, "--data-dir", demo_dir, "--progress", "none", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["indexed"] == len(SHIPPED_PHOTOS)


def test_each_suggested_search_finds_its_photo_first_with_the_starter_clip():
    """The banner's STARTER_QUERIES, through the default offline model, against the demo's
    photos as its bucket stores them (re-encoded JPEG): each one's photo ranks first."""
    import numpy as np

    from adapter import demo
    from adapter.embed import starter

    gallery = demo.stored_gallery()
    assert len(gallery) == len(SHIPPED_PHOTOS)
    keys = list(gallery)
    encoder = starter.StarterEncoder("clip")
    scores = encoder.encode_texts([q for q, _ in demo.STARTER_QUERIES]) @ encoder.encode_images(list(gallery.values())).T
    found = {query: keys[int(np.argmax(row))] for (query, _), row in zip(demo.STARTER_QUERIES, scores)}
    assert found == dict(demo.STARTER_QUERIES)
    assert "Try searching: a cat, a cup of coffee" in demo.examples("http://127.0.0.1:1", "u", "p")
