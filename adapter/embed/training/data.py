"""Dataset access for training/evaluating the starter heads (the shared real-photo sets).

Test splits come from splits.json; training code must only call the ``*_train`` views.
imagenet-sample is evaluation-only.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path


def datasets_dir() -> Path | None:
    """The shared datasets: $HA3_DATASETS, ../shared/datasets beside the repo, /work/shared/datasets."""
    candidates = []
    if os.environ.get("HA3_DATASETS"):
        candidates.append(Path(os.environ["HA3_DATASETS"]))
    candidates.append(Path(__file__).resolve().parents[3].parent / "shared" / "datasets")
    candidates.append(Path("/work/shared/datasets"))
    for c in candidates:
        if (c / "splits.json").is_file():
            return c
    return None


def require_datasets() -> Path:
    d = datasets_dir()
    if d is None:
        raise FileNotFoundError("shared datasets not found (set HA3_DATASETS)")
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


def imagenet_sample(root: Path) -> list[dict]:
    """EVALUATION ONLY: rows image,synset,label."""
    with open(root / "imagenet-sample" / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
