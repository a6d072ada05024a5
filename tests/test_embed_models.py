"""Model loaders (HF dir, sentence-transformers, ONNX pair) built from one tiny random CLIP,
their numerical agreement, the registry's configuration sources and its errors."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from PIL import Image

from adapter.datasets import dataset_images
from adapter.embed.base import Encoder
from adapter.embed.images import decode_image
from adapter.embed.preprocess import ClipPreprocess
from adapter.embed.registry import ModelRegistry, ModelSpec
from adapter.embed.testing import make_tiny_clip, tiny_clip_registry_config
from adapter.errors import ConfigError, EmbedError

TEXTS = ["a dog running on the grass", "the cat", "x", "a red dress and a long long pair of shoes at the door"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny") / "clip", image_size=64)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    imgs = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((64, 64), (80, 120), (150, 70))]
    imgs.append(Image.effect_mandelbrot((90, 66), (-2, -1, 1, 1), 60).convert("RGB"))
    imgs += [decode_image(p.read_bytes()) for p in dataset_images("flickr8k-1k", 2)]
    return imgs


@pytest.fixture(scope="module")
def hf(clip_dir):
    return ModelRegistry.from_config({"models": {"clip": {"kind": "hf_clip", "path": str(clip_dir), "device": "cpu"}}}).get("clip")


def _reference_image_vectors(clip_dir, imgs):
    """transformers' own processor + CLIPModel.get_image_features, L2-normalised."""
    import torch
    from transformers import AutoImageProcessor, CLIPModel

    proc = AutoImageProcessor.from_pretrained(clip_dir)
    model = CLIPModel.from_pretrained(clip_dir).eval()
    pixels = proc(images=imgs, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    out = getattr(out, "pooler_output", out).numpy()
    return pixels.numpy(), out / np.linalg.norm(out, axis=1, keepdims=True)


def test_fast_preprocessing_matches_hf_processor(clip_dir, images, hf):
    ref_pixels, _ = _reference_image_vectors(clip_dir, images)
    ours = hf.preprocess.batch(images)
    assert ours.shape == ref_pixels.shape == (len(images), 3, 64, 64)
    assert np.abs(ours - ref_pixels).max() < 1e-4


def test_preprocess_pads_images_smaller_than_crop():
    pre = ClipPreprocess(size=32, crop=40)
    out = pre.resize_crop(Image.new("RGB", (64, 32), (255, 255, 255)))
    assert out.shape == (40, 40, 3)
    assert out[0, 20].tolist() == [0, 0, 0] and out[20, 20].tolist() == [255, 255, 255]


def test_hf_encoder_matches_transformers_reference(clip_dir, images, hf):
    assert isinstance(hf, Encoder)
    assert hf.dimension == 512 and hf.normalized
    _, ref = _reference_image_vectors(clip_dir, images)
    vecs = hf.encode_images(images)
    assert vecs.dtype == np.float32 and vecs.shape == (len(images), 512)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.abs(vecs - ref).max() < 1e-4


def test_text_vectors_and_batching(hf):
    vecs = hf.encode_texts(TEXTS)
    assert vecs.shape == (4, 512) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([hf.encode_texts([t])[0] for t in TEXTS])
    assert np.abs(vecs - one_by_one).max() < 1e-4  # padding inside a batch changes nothing
    assert not np.allclose(vecs[0], vecs[1])
    assert hf.encode_texts([]).shape == (0, 512)
    long = hf.encode_texts(["word " * 500])  # truncated to the context length, not an error
    assert long.shape == (1, 512)


def test_unnormalised_spec(clip_dir, images):
    reg = ModelRegistry.from_config({"models": {"raw": {"path": str(clip_dir), "normalize": False, "device": "cpu"}}})
    enc = reg.get("raw")
    assert not enc.normalized
    assert not np.allclose(np.linalg.norm(enc.encode_images(images[:2]), axis=1), 1.0)


def test_sentence_transformers_format_agrees(clip_dir, images, hf, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

    st_dir = tmp_path / "st"
    SentenceTransformer(modules=[Transformer(str(clip_dir))], device="cpu").save(str(st_dir))
    reg = ModelRegistry.from_config({"models": {"clip": {"path": str(st_dir), "device": "cpu"}}})
    assert reg.spec("clip").kind == "st_clip"
    st = reg.get("clip")
    assert np.abs(st.encode_images(images) - hf.encode_images(images)).max() < 1e-4
    assert np.abs(st.encode_texts(TEXTS) - hf.encode_texts(TEXTS)).max() < 1e-4
    # and with sentence-transformers' own encode (its own preprocessing)
    native = SentenceTransformer(str(st_dir), device="cpu", local_files_only=True).encode(images[:4])
    native = native / np.linalg.norm(native, axis=1, keepdims=True)
    assert np.abs(native - st.encode_images(images[:4])).max() < 1e-4


def test_onnx_pair_agrees(clip_dir, images, hf, tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX support is the optional extra 'onnx'")
    pytest.importorskip("onnx", reason="exporting needs the optional extra 'onnx'")
    from adapter.embed.clip_onnx import export_onnx_clip

    onnx_dir = export_onnx_clip(clip_dir, tmp_path / "onnx")
    reg = ModelRegistry.from_config({}, env={"HA3_ADAPTER_MODEL_CLIP": str(onnx_dir), "HA3_ADAPTER_DEVICE": "cpu"})
    assert reg.spec("clip").kind == "onnx_clip"
    enc = reg.get("clip")
    assert enc.dimension == 512
    assert np.abs(enc.encode_images(images) - hf.encode_images(images)).max() < 1e-4
    assert np.abs(enc.encode_texts(TEXTS) - hf.encode_texts(TEXTS)).max() < 1e-4
    # onnxruntime's idle threads spin by default and starve the service's own threads of CPU
    for session in (enc._image, enc._text):
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnx_dir_missing_files(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX support is the optional extra 'onnx'")
    (tmp_path / "text.onnx").write_bytes(b"")
    reg = ModelRegistry.from_config({"models": {"m": {"kind": "onnx_clip", "path": str(tmp_path)}}})
    with pytest.raises(EmbedError, match="image.onnx"):
        reg.get("m")


# -- registry ---------------------------------------------------------------------
def test_defaults_are_starter_variants():
    reg = ModelRegistry.from_config(env={})
    assert reg.names() == ["clip", "clip_ecom"]
    assert reg.spec("clip").kind == "starter" and reg.spec("clip_ecom").variant == "clip_ecom"


def test_missing_starter_is_a_clear_embed_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "adapter.embed.starter", None)  # import → ImportError
    reg = ModelRegistry.from_config(env={})
    with pytest.raises(EmbedError, match="HA3_ADAPTER_MODEL_CLIP_ECOM"):
        reg.get("clip_ecom")


def test_yaml_toml_and_env_sources(clip_dir, tmp_path):
    yml = tmp_path / "models.yaml"
    yml.write_text(f"models:\n  clip:\n    kind: hf_clip\n    path: {clip_dir}\n    batch_size: 4\n")
    toml = tmp_path / "models.toml"
    toml.write_text(f'[models.clip_ecom]\nkind = "hf_clip"\npath = "{clip_dir}"\nimage_size = 48\n')
    reg = ModelRegistry.from_config(yml, env={})
    assert reg.spec("clip").batch_size == 4 and reg.spec("clip_ecom").kind == "starter"
    reg = ModelRegistry.from_config(toml, env={})
    assert reg.spec("clip_ecom").image_size == 48
    assert reg.get("clip_ecom").preprocess.crop == 48
    reg = ModelRegistry.from_config(env={"HA3_ADAPTER_MODELS": str(yml), "HA3_ADAPTER_MODEL_EXTRA": "starter:clip_ecom",
                                         "HA3_ADAPTER_MODEL_HUBBY": "hub:openai/clip-vit-base-patch32"})
    assert reg.names() == ["clip", "clip_ecom", "extra", "hubby"]
    assert reg.spec("extra").variant == "clip_ecom"
    assert reg.spec("hubby").hub_id == "openai/clip-vit-base-patch32"


@pytest.mark.parametrize("cfg,where", [
    ({"models": {"clip": {"kind": "nope", "path": "/x"}}}, "$.models.clip.kind"),
    ({"models": {"clip": {"kind": "hf_clip"}}}, "$.models.clip"),
    ({"models": {"clip": {"kind": "hf_clip", "path": "/x", "colour": "red"}}}, "$.models.clip.colour"),
    ({"models": {"clip": "just a string"}}, "$.models.clip"),
    ({"models": ["a"]}, "$.models"),
])
def test_bad_config_names_the_place(cfg, where):
    with pytest.raises(ConfigError) as info:
        ModelRegistry.from_config(cfg, env={})
    assert info.value.location == where


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ModelRegistry.from_config(tmp_path / "absent.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid"):
        ModelRegistry.from_config(bad, env={})


def test_unknown_model_and_missing_dir(tmp_path):
    reg = ModelRegistry.from_config({"models": {"m": {"kind": "hf_clip", "path": str(tmp_path / "nowhere")}}}, env={})
    with pytest.raises(EmbedError, match="unknown vector model 'nope'"):
        reg.get("nope")
    with pytest.raises(EmbedError, match="does not exist"):
        reg.get("m")
    (tmp_path / "empty").mkdir()
    reg = ModelRegistry.from_config({"models": {"m": {"kind": "hf_clip", "path": str(tmp_path / "empty")}}}, env={})
    with pytest.raises(EmbedError, match="cannot load CLIP"):
        reg.get("m")


def test_get_loads_once_under_concurrency(clip_dir):
    reg = ModelRegistry.from_config(tiny_clip_registry_config(clip_dir), env={})
    got = []
    threads = [threading.Thread(target=lambda: got.append(reg.get("clip"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and all(g is got[0] for g in got)
    assert reg.loaded() == ["clip"]


def test_offline_unless_a_hub_id_is_configured(clip_dir, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    ModelRegistry.from_config({"models": {"h": {"kind": "hf_clip", "hub_id": "org/some-clip"}}}, env={})
    import os

    assert "HF_HUB_OFFLINE" not in os.environ
    ModelRegistry.from_config(tiny_clip_registry_config(clip_dir), env={})
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_spec_validation():
    assert ModelSpec(name="clip", kind="starter").variant == "clip"
    with pytest.raises(ValueError):
        ModelSpec(name="x", kind="onnx_clip", hub_id="a/b")
