"""Dataset access for training/evaluating the starter heads (the shared real-photo sets).

Test splits come from splits.json. Training code reads only the ``*_train`` accessors, which
drop every test item before they return (tests check the train and test views are disjoint);
evaluation reads the ``*_test`` ones. imagenet-sample is evaluation-only.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from adapter.datasets import datasets_dir


def require_datasets() -> Path:
    d = datasets_dir()
    if d is None:
        raise FileNotFoundError("shared datasets not found (set HA3_ADAPTER_DATASETS)")
    return d


@dataclass(frozen=True)
class Split:
    train: list
    test: list


def _splits(root: Path) -> dict:
    return json.loads((root / "splits.json").read_text())


def flickr(root: Path) -> tuple[list[str], dict[str, list[str]], set[str]]:
    """(image names in file order, captions per image, test image names)."""
    caps: dict[str, list[str]] = {}
    with open(root / "flickr8k-1k" / "captions.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            caps.setdefault(row["image"], []).append(row["caption"].strip())
    names = sorted(caps)
    test = set(_splits(root)["flickr8k-1k"]["test"])
    return names, caps, test


def fashion(root: Path) -> tuple[list[dict], set[str]]:
    """(style rows that have an image, test ids as strings)."""
    rows = []
    img_dir = root / "fashion-10k" / "images"
    with open(root / "fashion-10k" / "styles.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if (img_dir / f"{row['id']}.jpg").is_file():
                rows.append(row)
    rows.sort(key=lambda r: int(r["id"]))
    test = {str(x) for x in _splits(root)["fashion-10k"]["test"]}
    return rows, test


def clothing(root: Path) -> tuple[list[dict], set[str]]:
    """clothing-parsing (rows: image, tags (list), areas ({tag: share}, may be empty)), test names."""
    rows = []
    with open(root / "clothing-parsing" / "tags.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            areas = dict((t, float(a)) for t, _, a in (x.partition(":") for x in row["areas"].split(";") if x))
            rows.append({"image": row["image"], "tags": [t for t in row["tags"].split(";") if t], "areas": areas})
    rows.sort(key=lambda r: r["image"])
    return rows, set(_splits(root)["clothing-parsing"]["test"])


# -- the views training and evaluation read -----------------------------------------------
def _part(items: list, test: set[str], key, part: str) -> list:
    """The items of one side of a split: key(item) in test ⇔ part == "test"."""
    return [item for item in items if (key(item) in test) == (part == "test")]


def flickr_train(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Flickr8k train images (file order) and their captions; no test image, no test caption."""
    names, caps, test = flickr(root)
    keep = _part(names, test, str, "train")
    return keep, {n: caps[n] for n in keep}


def flickr_test(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    names, caps, test = flickr(root)
    keep = _part(names, test, str, "test")
    return keep, {n: caps[n] for n in keep}


def fashion_train(root: Path) -> list[dict]:
    return _part(*fashion(root), lambda r: r["id"], "train")


def fashion_test(root: Path) -> list[dict]:
    return _part(*fashion(root), lambda r: r["id"], "test")


def clothing_train(root: Path) -> list[dict]:
    return _part(*clothing(root), lambda r: r["image"], "train")


def clothing_test(root: Path) -> list[dict]:
    return _part(*clothing(root), lambda r: r["image"], "test")


def imagenet_sample(root: Path) -> list[dict]:
    """EVALUATION ONLY: rows image,synset,label."""
    with open(root / "imagenet-sample" / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
