"""CLIP image preprocessing with PIL + numpy, numerically equal to transformers' processor.

``CLIPImageProcessor`` does: shortest edge → ``size`` (bicubic, long side
``int(size * long / short)``), centre crop ``crop`` (top/left ``(dim - crop) // 2``,
zero padding when smaller), ``x / 255``, ``(x - mean) / std``, channels first.
This class does the same steps on uint8 arrays in one fused affine step, without the
processor's per-call overhead, and is picklable so worker threads/processes can run it.
The tests compare it with the real processor on the same images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_RESAMPLE = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC,
             4: Image.BOX, 5: Image.HAMMING}


@dataclass(frozen=True)
class ClipPreprocess:
    size: int = 224  # shortest edge after resize
    crop: int = 224  # square centre crop
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: int = 3  # PIL code, as in HF configs (3 = bicubic)
    _scale: np.ndarray = field(init=False, repr=False, compare=False)
    _shift: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        std = np.asarray(self.std, dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        # (x/255 - mean)/std == x * scale + shift
        object.__setattr__(self, "_scale", (1.0 / (255.0 * std)).astype(np.float32)[:, None, None])
        object.__setattr__(self, "_shift", (-mean / std).astype(np.float32)[:, None, None])

    @classmethod
    def from_hf_config(cls, path: str | Path) -> "ClipPreprocess":
        """Read ``preprocessor_config.json`` or ``processor_config.json`` (file or model dir)."""
        path = Path(path)
        if path.is_dir():
            candidates = [path / "preprocessor_config.json", path / "processor_config.json"]
            path = next((c for c in candidates if c.exists()), candidates[0])
        cfg = json.loads(path.read_text())
        return cls.from_mapping(cfg.get("image_processor", cfg))

    @classmethod
    def from_image_processor(cls, processor) -> "ClipPreprocess":
        """From a live transformers image processor (or a processor holding one)."""
        processor = getattr(processor, "image_processor", processor)
        keys = ("size", "crop_size", "image_mean", "image_std", "resample")
        return cls.from_mapping({k: getattr(processor, k) for k in keys if getattr(processor, k, None) is not None})

    @classmethod
    def from_mapping(cls, cfg) -> "ClipPreprocess":
        size = _edge(cfg.get("size", 224))
        crop = _edge(cfg.get("crop_size", size)) or size
        return cls(
            size=int(size),
            crop=int(crop),
            mean=tuple(float(v) for v in cfg.get("image_mean", OPENAI_CLIP_MEAN)),
            std=tuple(float(v) for v in cfg.get("image_std", OPENAI_CLIP_STD)),
            resample=int(cfg.get("resample", 3)),
        )

    def resize_crop(self, img: Image.Image) -> np.ndarray:
        """RGB image → (crop, crop, 3) uint8 after shortest-edge resize + centre crop."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.size, int(self.size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), resample=_RESAMPLE.get(self.resample, Image.BICUBIC))
        arr = np.asarray(img)
        c = self.crop
        top, left = (new_h - c) // 2, (new_w - c) // 2
        if top >= 0 and left >= 0:
            return arr[top:top + c, left:left + c]
        out = np.zeros((max(c, new_h), max(c, new_w), 3), dtype=np.uint8)
        tp, lp = -(-(out.shape[0] - new_h) // 2), -(-(out.shape[1] - new_w) // 2)
        out[tp:tp + new_h, lp:lp + new_w] = arr
        top, left = (out.shape[0] - c) // 2, (out.shape[1] - c) // 2
        return out[top:top + c, left:left + c]

    def __call__(self, img: Image.Image) -> np.ndarray:
        """RGB image → (3, crop, crop) float32 model input."""
        return self.normalize(self.resize_crop(img)[None])[0]

    def normalize(self, batch_hwc: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 → (n, 3, H, W) float32 normalised."""
        x = np.ascontiguousarray(batch_hwc.transpose(0, 3, 1, 2), dtype=np.float32)
        x *= self._scale
        x += self._shift
        return x

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, 3, self.crop, self.crop), dtype=np.float32)
        return self.normalize(np.stack([self.resize_crop(im) for im in images]))


def _edge(size) -> int | None:
    """224, {"shortest_edge": 224}, {"height": 224, "width": 224} or a SizeDict → 224."""
    if size is None or isinstance(size, int):
        return size
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    return get("shortest_edge") or get("height")
