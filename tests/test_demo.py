"""``ha3-adapter demo --no-serve``: table from the seed schema, photos in, reuse on rerun."""

from __future__ import annotations

import base64
import json

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
