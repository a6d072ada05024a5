"""Extract frozen-tower features once and cache them (training runs on the cache).

    python -m adapter.embed.training.features [--backbone efficientnet-lite0] [--views crop,aug0,aug1]

Image cache per (backbone, set, view), for the *train* splits only (``data.*_train``: no
test image is ever read here, and imagenet-sample never): pooled backbone features (float16),
ImageNet logits (float32), 8-bin/channel RGB histograms of the very crop the backbone saw
(clip_ecom's colour head) and, for EfficientNet-lite0, every ``starter.TAPS`` block feature
(float16, ``tap_<name>``). The backbone runs in ONNX Runtime (``starter_onnx.feature_session``,
four times torch's speed on two cores).

Views: ``crop`` is the encoder's own view; ``flip`` its mirror; ``aug<k>`` a random view per
photo (seeded by set, k and photo), made to break the catalogue look the product photos share:
random crops and scales, mirror, rotation, colour and brightness jitter, greyscale, and for
product photos on white a new background (a train photo of a street or a scene) behind the
product, shrunk and moved.
"""

from __future__ import annotations

import argparse
import os
import time
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from adapter.embed import starter
from adapter.embed.training import data


def cache_root() -> Path:
    """Training caches: $HA3_ADAPTER_TRAIN_CACHE, else the user cache dir (never the repository)."""
    from adapter.embed.starter_onnx import cache_dir

    return Path(os.environ.get("HA3_ADAPTER_TRAIN_CACHE") or cache_dir() / "training")


CACHE = cache_root()
SETS = ("flickr", "fashion", "clothing")


def image_cache_path(backbone: str, set_name: str, view: str = "crop") -> Path:
    suffix = "" if view == "crop" else f"_{view}"
    return CACHE / f"img_{backbone}_{set_name}{suffix}.npz"


def _rng(set_name: str, view: str, key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{set_name}/{view}/{key}".encode()))


def _white_mask(img: Image.Image) -> np.ndarray:
    """Where a catalogue photo is its white backdrop: near-white pixels (a product's own white
    parts lose little: the new background shows through small areas only)."""
    arr = np.asarray(img)
    return (arr.min(axis=2) > 235)


def augment(img: Image.Image, rng: np.random.Generator, backgrounds: Sequence[Path] = (), on_white: bool = False) -> Image.Image:
    """One random view of img (RGB); backgrounds: photos a product on white may be set into."""
    if on_white and backgrounds and rng.random() < 0.6:
        bg = starter.open_image(backgrounds[int(rng.integers(len(backgrounds)))], 256).resize((256, 256), Image.BILINEAR)
        scale = rng.uniform(0.45, 0.95)
        side = int(256 * scale)
        prod = img.resize((side, side), Image.BILINEAR)
        mask = Image.fromarray(((~_white_mask(prod)) * 255).astype(np.uint8))
        x, y = (int(rng.integers(0, 256 - side + 1)) for _ in range(2))
        bg.paste(prod, (x, y), mask)
        img = bg
    w, h = img.size
    area = rng.uniform(0.35, 1.0) * w * h  # random resized crop
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = min(w, int(round(np.sqrt(area * ratio)))), min(h, int(round(np.sqrt(area / ratio))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    if rng.random() < 0.25:
        img = img.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR, expand=False, fillcolor=(127, 127, 127))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.1:
        img = ImageOps.grayscale(img).convert("RGB")
    return img


def _pixels(path: Path, size: int, set_name: str, view: str, key: str, backgrounds: Sequence[Path]) -> np.ndarray:
    image = starter.open_image(path, size)
    if view == "squash":
        return starter.crop_pixels(image, size, crop=False)
    if view.startswith("aug"):
        image = augment(image, _rng(set_name, view, key), backgrounds, on_white=set_name == "fashion")
        return starter.crop_pixels(image, size, crop=False)  # the crop was random already
    arr = starter.crop_pixels(image, size)
    return np.ascontiguousarray(arr[:, ::-1]) if view == "flip" else arr


def extract_images(paths: list[Path], backbone: str, batch: int = 32, view: str = "crop", set_name: str = "",
                   keys: Sequence[str] = (), backgrounds: Sequence[Path] = ()) -> dict[str, np.ndarray]:
    """pooled, logits, colour8 and tap_<name> arrays, one row per image."""
    from adapter.embed.starter_onnx import feature_session

    size = starter.backbone_image_size(backbone)
    taps = tuple(starter.TAPS) if backbone == "efficientnet-lite0" else ()  # lite0's block indices
    sess = feature_session(backbone, taps)
    names = [o.name for o in sess.get_outputs()]
    out: dict[str, list[np.ndarray]] = {}
    t0 = time.time()
    keys = list(keys) or [str(p) for p in paths]
    for i in range(0, len(paths), batch):
        px = np.stack([_pixels(p, size, set_name, view, k, backgrounds) for p, k in zip(paths[i:i + batch], keys[i:i + batch])])
        got = dict(zip(names, sess.run(None, {"pixels": px})))
        rows = {"pooled": got["pooled"].astype(np.float16), "logits": got["logits"].astype(np.float32),
                "colour8": starter.colour_histogram(px, 8),  # of the very crop the backbone saw
                **{n: got[n].astype(np.float16) for n in names if n.startswith("tap_")}}
        for key, value in rows.items():
            out.setdefault(key, []).append(value)
        if (i // batch) % 50 == 0:
            print(f"  {i + len(px)}/{len(paths)} {time.time() - t0:.0f}s", flush=True)
    return {key: np.concatenate(parts) for key, parts in out.items()}


def backbone_inputs(cache: dict[str, np.ndarray], taps: Sequence[str]) -> np.ndarray:
    """What an image head reads from a loaded cache: pooled features, then its taps'
    (float32, as ``starter.with_taps`` builds them at inference)."""
    missing = [name for name in taps if f"tap_{name}" not in cache]
    if missing:
        raise SystemExit(f"this feature cache has no block taps {missing}: delete {CACHE}/img_efficientnet-lite0_* "
                         "and run python -m adapter.embed.training.features again")
    return np.concatenate([cache["pooled"].astype(np.float32)] + [cache[f"tap_{n}"].astype(np.float32) for n in taps], axis=1)


def colour_histograms(cache: dict[str, np.ndarray], bins: int) -> np.ndarray:
    """A loaded image cache's histograms re-binned to bins per channel (8 must be a multiple of bins)."""
    h = cache["colour8"]
    f = 8 // bins
    return h.reshape(-1, bins, f, bins, f, bins, f).sum(axis=(2, 4, 6)).reshape(len(h), -1)


def image_sets(root: Path) -> dict[str, tuple[list[str], list[Path]]]:
    """The train splits' photos (keys, paths) per set: test items never appear."""
    names, _ = data.flickr_train(root)
    rows = data.fashion_train(root)
    clothes = data.clothing_train(root)
    return {
        "flickr": (names, [root / "flickr8k-1k" / "images" / n for n in names]),
        "fashion": ([r["id"] for r in rows], [root / "fashion-10k" / "images" / f"{r['id']}.jpg" for r in rows]),
        "clothing": ([r["image"] for r in clothes], [root / "clothing-parsing" / "images" / r["image"] for r in clothes]),
    }


def load_images(backbone: str, set_name: str, view: str = "crop") -> dict[str, np.ndarray]:
    z = np.load(image_cache_path(backbone, set_name, view), allow_pickle=False)
    return {k: z[k] for k in z.files}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--views", default="crop", help="comma-separated: crop, flip, squash, aug0, aug1, ...")
    args = ap.parse_args()
    root = data.require_datasets()
    CACHE.mkdir(parents=True, exist_ok=True)
    sets = image_sets(root)
    backgrounds = sets["flickr"][1] + sets["clothing"][1]  # train photos only
    for view in args.views.split(","):
        for s in args.sets.split(","):
            out = image_cache_path(args.backbone, s, view)
            if out.exists():
                print(f"{out} exists")
                continue
            keys, paths = sets[s]
            print(f"{s}: {len(paths)} images ({view}, {args.backbone})", flush=True)
            arrays = extract_images(paths, args.backbone, view=view, set_name=s, keys=keys, backgrounds=backgrounds)
            tmp = out.with_suffix(".tmp.npz")
            np.savez(tmp, keys=np.array(keys), **arrays)
            os.replace(tmp, out)


if __name__ == "__main__":
    main()
