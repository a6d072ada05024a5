"""The offline starter models load from package data and behave like a CLIP-style encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adapter.embed import starter
from adapter.embed.base import Encoder
from adapter.embed.training import data
from adapter.errors import ConfigError


@pytest.fixture(scope="module", params=starter.VARIANTS)
def encoder(request):
    return starter.StarterEncoder(request.param)


def _photo(seed: int, size=(300, 200)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_heads_ship_as_package_data_with_recipe_metadata():
    for v in starter.VARIANTS:
        path = starter.weights_path(v)
        assert path.is_file() and path.stat().st_size <= 5_000_000  # repository guideline
        _, meta = starter.load_heads(path)
        assert meta["variant"] == v
        assert meta["backbone"].startswith("efficientnet-lite")
        assert meta["seed"].isdigit()
        assert "w_fashion" in json.loads(meta["recipe"])


def test_protocol_shapes_and_normalisation(encoder):
    assert isinstance(encoder, Encoder)
    assert encoder.dimension == 512 and encoder.normalized
    imgs = encoder.encode_images([_photo(1), _photo(2, (224, 224)), _photo(3, (120, 500)).convert("L")])
    txt = encoder.encode_texts(["a dog on the beach", "red shoes for women"])
    for arr, n in ((imgs, 3), (txt, 2)):
        assert arr.shape == (n, 512) and arr.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-4)
    assert encoder.encode_images([]).shape == (0, 512)
    assert encoder.encode_texts([]).shape == (0, 512)


def test_deterministic_and_batch_independent(encoder):
    a = encoder.encode_images([_photo(5), _photo(6)])
    b = encoder.encode_images([_photo(6)])
    np.testing.assert_allclose(a[1], b[0], atol=1e-5)
    t1 = encoder.encode_texts(["a black dog", "a white cat"])
    t2 = encoder.encode_texts(["a white cat"])
    np.testing.assert_allclose(t1[1], t2[0], atol=1e-5)


def test_preprocess_then_encode_matches_encode_images(encoder):
    img = _photo(7, (640, 480))
    batch = np.stack([encoder.preprocess(img)])
    assert batch.shape == (1, encoder.image_size, encoder.image_size, 3) and batch.dtype == np.uint8
    np.testing.assert_allclose(encoder.encode_preprocessed(batch), encoder.encode_images([img]), atol=1e-5)


def test_unknown_variant_is_a_config_error():
    with pytest.raises(ConfigError):
        starter.StarterEncoder("clip_large")


def test_product_names_find_their_own_photos():
    """50 fashion *test* items: each product name should rank its own photo in the top 10."""
    root = data.datasets_dir()
    if root is None:
        pytest.skip("shared datasets not found (../shared/datasets or HA3_ADAPTER_DATASETS)")
    rows, test = data.fashion(root)
    items = [r for r in rows if r["id"] in test][:50]
    enc = starter.StarterEncoder("clip_ecom")
    zi = enc.encode_images([starter.open_image(root / "fashion-10k" / "images" / f"{r['id']}.jpg") for r in items])
    zt = enc.encode_texts([r["productDisplayName"] for r in items])
    top10 = np.argsort(-(zt @ zi.T), axis=1)[:, :10]
    hit = np.mean([i in top10[i] for i in range(len(items))])
    assert hit >= 0.8, hit  # measured well above this; a broken head or preprocessing lands near 0.2


def test_class_prompts_match_a_recognisable_photo():
    """Zero-shot path: an ImageNet photo is closer to its own class prompt than to others."""
    root = data.datasets_dir()
    if root is None:
        pytest.skip("shared datasets not found (../shared/datasets or HA3_ADAPTER_DATASETS)")
    rows = data.imagenet_sample(root)[::50]  # 20 classes
    enc = starter.StarterEncoder("clip")
    zi = enc.encode_images([starter.open_image(root / "imagenet-sample" / "images" / r["image"]) for r in rows])
    zt = enc.encode_texts([f"a photo of a {r['label']}" for r in rows])
    acc = np.mean((zi @ zt.T).argmax(1) == np.arange(len(rows)))
    assert acc >= 0.6, acc


def test_colour_histogram_of_the_crop_finds_the_colour():
    red = starter.crop_pixels(Image.new("RGB", (300, 200), (230, 20, 20)))
    half = np.array(Image.new("RGB", (224, 224), (255, 255, 255)))
    half[:, :112] = (10, 10, 200)  # left half blue
    blue_white = starter.crop_pixels(Image.fromarray(half))
    h = starter.colour_histogram(np.stack([red, blue_white]))
    assert h.shape == (2, starter.COLOUR_BINS ** 3)
    np.testing.assert_allclose(h.sum(1), 1.0, atol=1e-6)
    b = starter.COLOUR_BINS
    assert h[0, (3 * b + 0) * b + 0] == pytest.approx(1.0)  # all pixels in the red bin
    assert h[1, (0 * b + 0) * b + 3] == pytest.approx(0.5) and h[1, b ** 3 - 1] == pytest.approx(0.5)


def test_clip_ecom_uses_colour_and_clip_does_not():
    assert starter.load_heads(starter.weights_path("clip_ecom"))[0].colour_bins == starter.COLOUR_BINS
    assert starter.load_heads(starter.weights_path("clip"))[0].colour_bins == 0


def test_block_taps_come_from_the_same_forward_pass():
    """backbone_features writes EfficientNet's forward out to read block taps; its pooled
    features must be the library's own, and the taps what clip_ecom's heads were trained on."""
    import torch

    model = starter.load_backbone("efficientnet-lite0")
    batch = torch.from_numpy(np.stack([starter.preprocess_image(_photo(i)) for i in range(3)]))
    pooled, logits, tapped = starter.backbone_features(model, batch, tuple(starter.TAPS))
    with torch.inference_mode():
        reference = model.extract_features(batch).mean(dim=(2, 3))
        assert torch.allclose(pooled, reference, atol=1e-5)
        assert torch.allclose(logits, model._fc(reference), atol=1e-4)
    heads = starter.StarterEncoder("clip_ecom").heads
    assert heads.taps and set(heads.taps) <= set(tapped)
    assert sum(tapped[name].shape[1] for name in heads.taps) == heads.tap_dim
    assert starter.with_taps(pooled, tapped, heads.taps).shape == (3, 1280 + heads.tap_dim)
    x = torch.randn(2, 5, 6, 6)  # grid2: four quadrant means per channel, quadrant-major
    quads = starter._pool(x, "grid2").reshape(2, 4, 5)
    assert torch.allclose(quads.mean(dim=1), starter._pool(x, "mean"), atol=1e-6)
    assert torch.allclose(quads[:, 3], x[:, :, 3:, 3:].mean(dim=(2, 3)))


def test_packed_weights_round_trip_within_a_fraction_of_their_scale():
    import torch

    torch.manual_seed(0)
    state = {"a.weight": torch.randn(6, 50) * torch.logspace(-3, 1, 6)[:, None], "a.bias": torch.randn(6)}
    packed = starter.pack_state(state)
    assert packed["a.weight"].dtype == torch.int8 and packed["a.bias"].dtype == torch.float32
    back = starter.unpack_state(packed)
    assert set(back) == set(state) and torch.equal(back["a.bias"], state["a.bias"])
    row_max = state["a.weight"].abs().amax(dim=1, keepdim=True)
    assert ((back["a.weight"] - state["a.weight"]).abs() <= row_max / 254 + 1e-9).all()  # half a step per row


def test_soup_is_the_mean_of_members_trained_on_different_batch_orders(monkeypatch):
    import torch

    from adapter.embed.training import train_starter

    def member(variant, d, steps=None, order_seed=None, recipe=None, start=None):
        torch.manual_seed(order_seed)  # stands in for training: weights that depend on the order seed
        heads = starter.StarterHeads(img_hidden=8, txt_hidden=8)
        for p in heads.parameters():
            p.data.normal_()
        return heads

    monkeypatch.setattr(train_starter, "train", member)
    monkeypatch.setitem(train_starter.RECIPES, "one_stage", dict(steps=10, soup=3))
    soup = train_starter.train_soup("one_stage", {}).state_dict()
    states = [member("one_stage", {}, order_seed=train_starter.SEED + k).state_dict() for k in range(3)]
    assert not torch.equal(states[0]["img_feat.weight"], states[1]["img_feat.weight"])
    for key, value in soup.items():
        torch.testing.assert_close(value, (states[0][key] + states[1][key] + states[2][key]) / 3)
    monkeypatch.setitem(train_starter.RECIPES["one_stage"], "soup", 1)
    torch.testing.assert_close(train_starter.train_soup("one_stage", {}).state_dict()["img_feat.weight"],
                               states[0]["img_feat.weight"])


def test_finetune_stage_continues_from_the_first_stages_soup(monkeypatch):
    import torch

    from adapter.embed.training import train_starter

    calls = []

    def member(variant, d, steps=None, order_seed=None, recipe=None, start=None):
        calls.append((recipe, start))
        heads = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():  # soup member k adds k + 1 to where it started
            heads.weight.fill_((0.0 if start is None else float(start["weight"])) + order_seed - train_starter.SEED + 1)
        return heads

    monkeypatch.setattr(train_starter, "train", member)
    monkeypatch.setitem(train_starter.RECIPES, "two_stage", dict(soup=2, lr=1e-3, steps=10, w_clothing=0.0,
                                                                 finetune=dict(lr=1e-4, w_clothing=5.0)))
    out = train_starter.train_soup("two_stage", {})
    # stage 1: members at 1 and 2 average to 1.5; stage 2: one member from there, 1.5 + 1
    assert out.weight.item() == 2.5
    assert [start is None for _, start in calls] == [True, True, False]
    stage2 = calls[2][0]
    assert (stage2["lr"], stage2["w_clothing"], stage2["soup"], stage2["steps"]) == (1e-4, 5.0, 1, 10)
    assert (calls[0][0]["lr"], calls[0][0]["w_clothing"]) == (1e-3, 0.0)
