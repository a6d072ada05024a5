"""Extract frozen-tower features once and cache them (training runs on the cache).

    python -m adapter.embed.training.features [--backbone efficientnet-lite0] [--view crop]

Image cache per (backbone, set, view): pooled backbone features (float16), ImageNet logits
(float32), 8-bin/channel RGB histograms of the very input the backbone saw (clip_ecom's
colour head) and, for EfficientNet-lite0, every ``starter.TAPS`` block feature (float16,
``tap_<name>``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from adapter.embed import starter
from adapter.embed.training import data

CACHE = Path(__file__).resolve().parents[3] / ".cache" / "starter"


VIEWS = ("crop", "flip", "squash")  # crop: the encoder's own view; flip: its mirror (augmentation)


def image_cache_path(backbone: str, set_name: str, view: str = "crop") -> Path:
    suffix = "" if view == "crop" else f"_{view}"
    return CACHE / f"img_{backbone}_{set_name}{suffix}.npz"


def _view(path: Path, size: int, view: str) -> np.ndarray:
    image = starter.open_image(path, size)
    if view == "squash":
        return starter.preprocess_image(image, size, crop=False)
    arr = starter.preprocess_image(image, size)
    return np.ascontiguousarray(arr[:, :, ::-1]) if view == "flip" else arr


def extract_images(paths: list[Path], backbone: str, batch: int = 32, view: str = "crop") -> dict[str, np.ndarray]:
    """pooled, logits, colour8 and tap_<name> arrays, one row per image."""
    model = starter.load_backbone(backbone)
    size = starter.backbone_image_size(backbone)
    taps = tuple(starter.TAPS) if backbone == "efficientnet-lite0" else ()  # lite0's block indices
    out: dict[str, list[np.ndarray]] = {}
    t0 = time.time()
    for i in range(0, len(paths), batch):
        x = torch.from_numpy(np.stack([_view(p, size, view) for p in paths[i:i + batch]]))
        pooled, logits, tapped = starter.backbone_features(model, x, taps)
        rows = {"pooled": pooled.numpy().astype(np.float16), "logits": logits.numpy().astype(np.float32),
                "colour8": starter.colour_histogram(x, 8).numpy(),  # of the very input the backbone saw
                **{f"tap_{name}": t.numpy().astype(np.float16) for name, t in tapped.items()}}
        for key, value in rows.items():
            out.setdefault(key, []).append(value)
        if (i // batch) % 20 == 0:
            print(f"  {i + len(x)}/{len(paths)} {time.time() - t0:.0f}s", flush=True)
    return {key: np.concatenate(parts) for key, parts in out.items()}


def backbone_inputs(cache: dict[str, np.ndarray], taps: Sequence[str]) -> np.ndarray:
    """What an image head reads from a loaded cache: pooled features, then its taps'
    (float32, as ``starter.with_taps`` builds them at inference)."""
    missing = [name for name in taps if f"tap_{name}" not in cache]
    if missing:
        raise SystemExit(f"this feature cache has no block taps {missing}: delete .cache/starter/img_efficientnet-lite0_* "
                         "and run python -m adapter.embed.training.features again")
    return np.concatenate([cache["pooled"].astype(np.float32)] + [cache[f"tap_{n}"].astype(np.float32) for n in taps], axis=1)


def colour_histograms(cache: dict[str, np.ndarray], bins: int) -> np.ndarray:
    """A loaded image cache's histograms re-binned to bins per channel (8 must be a multiple
    of bins). A mirrored crop's histogram is the crop's, so either view's cache serves."""
    if "colour8" not in cache:
        raise SystemExit("this feature cache predates colour histograms: delete .cache/starter/img_* "
                         "and run python -m adapter.embed.training.features again")
    h = cache["colour8"]
    f = 8 // bins
    return h.reshape(-1, bins, f, bins, f, bins, f).sum(axis=(2, 4, 6)).reshape(len(h), -1)


def image_sets(root: Path) -> dict[str, tuple[list[str], list[Path]]]:
    names, _, _ = data.flickr(root)
    rows, _ = data.fashion(root)
    inet = data.imagenet_sample(root)
    return {
        "flickr": (names, [root / "flickr8k-1k" / "images" / n for n in names]),
        "imagenet": ([r["image"] for r in inet], [root / "imagenet-sample" / "images" / r["image"] for r in inet]),
        "fashion": ([r["id"] for r in rows], [root / "fashion-10k" / "images" / f"{r['id']}.jpg" for r in rows]),
    }


def load_images(backbone: str, set_name: str, view: str = "crop") -> dict[str, np.ndarray]:
    z = np.load(image_cache_path(backbone, set_name, view), allow_pickle=False)
    return {k: z[k] for k in z.files}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--sets", default="flickr,imagenet,fashion")
    ap.add_argument("--view", default="crop", choices=VIEWS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    root = data.require_datasets()
    CACHE.mkdir(parents=True, exist_ok=True)
    sets = image_sets(root)
    for s in args.sets.split(","):
        out = image_cache_path(args.backbone, s, args.view)
        if out.exists():
            print(f"{out} exists")
            continue
        keys, paths = sets[s]
        print(f"{s}: {len(paths)} images ({args.view})")
        np.savez(out, keys=np.array(keys), **extract_images(paths, args.backbone, view=args.view))


if __name__ == "__main__":
    main()
