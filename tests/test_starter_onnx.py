"""The starter towers in ONNX Runtime: the same embeddings as torch, exported once per
user cache, torch as the fallback."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from adapter.embed import starter, starter_onnx


def _photos(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (180 + 20 * i, 260, 3), dtype=np.uint8)) for i in range(n)]


TEXTS = ["a dog running on the beach", "red shoes for women", "a person wearing a skirt", "x"]


@pytest.mark.parametrize("variant", starter.VARIANTS)
def test_onnx_towers_give_torch_embeddings(variant):
    onnx = starter.StarterEncoder(variant)
    torch_ = starter.StarterEncoder(variant, runtime="torch")
    assert (onnx.runtime, torch_.runtime) == ("onnx", "torch")
    images = _photos(3)
    np.testing.assert_allclose(onnx.encode_images(images), torch_.encode_images(images), atol=2e-4)
    np.testing.assert_allclose(onnx.encode_texts(TEXTS), torch_.encode_texts(TEXTS), atol=2e-4)
    # the torch text tower is sentence-transformers itself: padding a batch changes nothing
    np.testing.assert_allclose(onnx.encode_texts(TEXTS[:1]), onnx.encode_texts(TEXTS)[:1], atol=1e-5)


def test_exported_graphs_are_cached_and_keyed_by_the_heads(tmp_path, monkeypatch):
    monkeypatch.setenv("HA3_ADAPTER_CACHE_DIR", str(tmp_path))
    first = starter.StarterEncoder("clip_ecom")
    assert first.runtime == "onnx"
    paths = first._onnx.paths
    assert all(p.is_file() and tmp_path in p.parents for p in paths)

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the graphs")

    monkeypatch.setattr(starter_onnx, "export_image_tower", no_export)
    monkeypatch.setattr(starter_onnx, "export_text_tower", no_export)
    again = starter.StarterEncoder("clip_ecom")
    assert again.runtime == "onnx" and again._onnx.paths == paths

    # other heads (here: the same file, one byte of metadata changed) need graphs of their own:
    # the export is attempted, fails on purpose, and the encoder falls back to torch
    other = tmp_path / "heads.safetensors"
    blob = bytearray(starter.weights_path("clip_ecom").read_bytes())
    blob[blob.index(b'"variant":"clip_ecom"') + 1] = ord("V")
    other.write_bytes(bytes(blob))
    changed = starter.StarterEncoder("clip_ecom", weights=other)
    assert changed.runtime == "torch"
    np.testing.assert_allclose(changed.encode_texts(TEXTS), again.encode_texts(TEXTS), atol=2e-4)


def test_without_onnxruntime_the_encoder_runs_in_torch(monkeypatch, tmp_path):
    monkeypatch.setenv("HA3_ADAPTER_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    enc = starter.StarterEncoder("clip_ecom")
    assert enc.runtime == "torch"
    assert enc.encode_images(_photos(1)).shape == (1, 512)


def test_runtime_can_be_chosen_and_is_checked(monkeypatch):
    monkeypatch.setenv(starter.ENV_RUNTIME, "torch")
    assert starter.StarterEncoder("clip_ecom").runtime == "torch"
    monkeypatch.setenv(starter.ENV_RUNTIME, "tensorflow")
    with pytest.raises(starter.ConfigError):
        starter.StarterEncoder("clip_ecom")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HA3_ADAPTER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert starter_onnx.cache_dir() == tmp_path / "ha3-adapter"
    monkeypatch.setenv("HA3_ADAPTER_CACHE_DIR", str(tmp_path / "x"))
    assert starter_onnx.cache_dir() == tmp_path / "x"


def test_feature_graph_matches_the_torch_backbone(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("HA3_ADAPTER_CACHE_DIR", str(tmp_path))
    taps = tuple(starter.TAPS)
    sess = starter_onnx.feature_session("efficientnet-lite0", taps)
    pixels = np.stack([starter.crop_pixels(im) for im in _photos(2)])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"pixels": pixels})))
    pooled, logits, tapped = starter.backbone_features(
        starter.load_backbone("efficientnet-lite0"), starter.pixels_to_input(torch.from_numpy(pixels)), taps)
    np.testing.assert_allclose(got["pooled"], pooled.numpy(), atol=1e-3)
    np.testing.assert_allclose(got["logits"], logits.numpy(), atol=1e-3)
    for name in taps:
        np.testing.assert_allclose(got[f"tap_{name}"], tapped[name].numpy(), atol=1e-3)


def test_the_service_keeps_exported_graphs_inside_its_data_dir(monkeypatch, tmp_path):
    from adapter.config import Settings
    from adapter.runtime import Runtime

    monkeypatch.delenv("HA3_ADAPTER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    assert starter_onnx.cache_dir(tmp_path / "configured") == tmp_path / "configured"
    settings = Settings.load(overrides={"engine": {"kind": "embedded", "data_dir": str(tmp_path / "data")}})
    runtime = Runtime.from_settings(settings)
    try:
        registry = runtime.embedder.registry
        encoder = registry.get("clip_ecom")
        assert encoder.runtime == "onnx"
        assert all((tmp_path / "data" / "model-cache") in p.parents for p in encoder._onnx.paths)
        assert not (tmp_path / "user-cache").exists()
    finally:
        runtime.close()
