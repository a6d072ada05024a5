"""``ha3-adapter demo --no-serve``: table from the seed schema, photos in, reuse on rerun."""

from __future__ import annotations

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
