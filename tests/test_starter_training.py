"""The starter models' training inputs: train and test never meet; losses and augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from adapter.embed.training import data, features, train_starter


@pytest.fixture(scope="module")
def root():
    r = data.datasets_dir()
    if r is None:
        pytest.skip("shared datasets not found (../shared/datasets or HA3_ADAPTER_DATASETS)")
    return r


def test_train_views_hold_no_test_item_and_miss_nothing_else(root):
    names, caps, flickr_test = data.flickr(root)
    train_names, train_caps = data.flickr_train(root)
    test_names, _ = data.flickr_test(root)
    assert not set(train_names) & flickr_test and set(test_names) == flickr_test
    assert set(train_names) | set(test_names) == set(names) and set(train_caps) == set(train_names)

    rows, fashion_test = data.fashion(root)
    train_ids = {r["id"] for r in data.fashion_train(root)}
    assert not train_ids & fashion_test and {r["id"] for r in data.fashion_test(root)} == fashion_test
    assert len(train_ids) + len(fashion_test) == len(rows)

    clothes, clothing_test = data.clothing(root)
    train_images = {r["image"] for r in data.clothing_train(root)}
    assert not train_images & clothing_test and {r["image"] for r in data.clothing_test(root)} == clothing_test
    assert len(train_images) + len(clothing_test) == len(clothes) and len(clothing_test) == 420


def test_feature_extraction_reads_train_photos_only(root):
    import json

    splits = json.loads((root / "splits.json").read_text())
    sets = features.image_sets(root)
    assert set(sets) == {"flickr", "fashion", "clothing"}  # imagenet-sample: evaluation only
    assert not {p.name for p in sets["flickr"][1]} & set(splits["flickr8k-1k"]["test"])
    assert not {p.stem for p in sets["fashion"][1]} & {str(x) for x in splits["fashion-10k"]["test"]}
    assert not {p.name for p in sets["clothing"][1]} & set(splits["clothing-parsing"]["test"])


def test_clothing_rows_carry_tags_and_areas(root):
    rows, _ = data.clothing(root)
    first = next(r for r in rows if r["image"] == "0001.jpg")
    assert first["tags"][:3] == ["vest", "blouse", "skirt"]  # tags.csv's first row, by hand
    assert first["areas"]["vest"] == pytest.approx(0.090)


def test_multi_positive_nce_by_hand():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    positive = torch.tensor([[True, False, True], [False, True, False], [False, False, False]])
    row0 = math.log(math.exp(2) + 1 + math.exp(1)) - math.log(math.exp(2) + math.exp(1))
    row1 = math.log(1 + math.exp(3) + 1) - 3.0
    got = train_starter.multi_positive_nce(logits, positive)  # row 2 has no positive: left out
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_augment_is_seeded_and_puts_products_on_new_backgrounds(tmp_path):
    product = np.full((224, 224, 3), 255, np.uint8)
    product[80:150, 90:140] = (200, 30, 30)  # a red item on white
    street = tmp_path / "street.jpg"
    Image.fromarray(np.full((300, 400, 3), (40, 120, 60), np.uint8)).save(street)
    img = Image.fromarray(product)

    def view(key):
        return np.asarray(features.augment(img, features._rng("fashion", "aug0", key), [street], on_white=True))

    assert np.array_equal(view("1"), view("1"))
    views = [view(str(k)) for k in range(20)]
    assert not all(np.array_equal(views[0], v) for v in views[1:])
    # most views are set into the green street: their white share falls far below the original's
    white = [np.mean(v.min(axis=2) > 235) for v in views]
    assert np.mean(product.min(axis=2) > 235) > 0.9 and sum(w < 0.2 for w in white) >= 6
