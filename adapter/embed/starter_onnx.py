"""The starter towers in ONNX Runtime: exported once from their torch modules, cached per user.

Torch's CPU kernels for EfficientNet's depthwise convolutions are slow: lite2 runs about four
times faster in ONNX Runtime on the same two cores (bench/embed.py prints both). So a starter
model exports its two towers, each with its trained heads inside, on first use:

    image.onnx   pixels (n, H, W, 3) uint8 [, colour (n, 64) float32]  → image (n, 512), L2-normalised
    text.onnx    input_ids, attention_mask (n, L) int64                  → text (n, 512), L2-normalised

and keeps them in ``$HA3_ADAPTER_CACHE_DIR``, else in the folder its caller names (the
service passes one inside its data dir, so that it writes nowhere the operator did not
configure), else in ``$XDG_CACHE_HOME/ha3-adapter`` or ``~/.cache/ha3-adapter`` (bench and
training scripts), under a key made of everything the graphs depend on (the heads
file's bytes, the backbone, this module's format version, torch's version), so a retrained
head or a new torch exports afresh and nothing stale is ever run. Torch stays for training
and is the fallback when ONNX Runtime is missing or an export fails.

A third graph, ``features.onnx`` per backbone, gives training the backbone's raw outputs
(pooled features, logits, block taps) at the same speed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

FORMAT = 1  # bump when what the graphs compute changes
OPSET = 17
_EXPORT_LOCK = threading.Lock()


def cache_dir(configured: Path | None = None) -> Path:
    """Where exported graphs live: never inside the package or the repository."""
    if os.environ.get("HA3_ADAPTER_CACHE_DIR"):
        return Path(os.environ["HA3_ADAPTER_CACHE_DIR"])
    if configured is not None:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ha3-adapter"


def cache_key(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in (f"format {FORMAT}", f"torch {torch.__version__}", *parts):
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def session(path: Path):
    """An ONNX Runtime CPU session with the service's thread settings."""
    import onnxruntime as ort

    from adapter.embed.runtime import ort_session_options

    return ort.InferenceSession(str(path), ort_session_options(), providers=["CPUExecutionProvider"])


def export_once(path: Path, export) -> Path:
    """Run ``export(tmp_path)`` unless ``path`` exists, then move the result into place
    atomically (concurrent processes may race; the last rename wins with an equal file)."""
    with _EXPORT_LOCK:
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".onnx.tmp", dir=path.parent)
        os.close(fd)
        try:
            export(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict) -> None:
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about shapes frozen as constants
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


# -- image -------------------------------------------------------------------------------
class ImageTower(torch.nn.Module):
    """uint8 crops (n, H, W, 3) [+ colour histograms] → image embeddings; features_only gives
    the backbone's outputs instead (pooled, logits, then each of ``taps``)."""

    def __init__(self, backbone: torch.nn.Module, heads=None, taps: Sequence[str] = (), features_only: bool = False):
        super().__init__()
        self.backbone, self.heads, self.taps, self.features_only = backbone, heads, tuple(taps), features_only

    def forward(self, pixels: torch.Tensor, colour: torch.Tensor | None = None):
        from adapter.embed import starter

        pooled, logits, tapped = starter.forward_backbone(self.backbone, starter.pixels_to_input(pixels), self.taps)
        if self.features_only:
            return (pooled, logits, *[tapped[t] for t in self.taps])
        return self.heads.image(starter.with_taps(pooled, tapped, self.taps), logits, colour)


def export_image_tower(backbone, heads, size: int, path: Path) -> None:
    with_colour = bool(heads.colour_bins)
    pixels = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    args = (pixels, torch.full((2, heads.colour_bins ** 3), 1.0 / heads.colour_bins ** 3)) if with_colour else (pixels,)
    inputs = ["pixels"] + (["colour"] if with_colour else [])
    _export(ImageTower(backbone, heads, heads.taps), args, path, inputs, ["image"],
            {name: {0: "n"} for name in inputs + ["image"]})


def export_feature_tower(backbone, taps: Sequence[str], size: int, path: Path) -> None:
    outputs = ["pooled", "logits"] + [f"tap_{t}" for t in taps]
    _export(ImageTower(backbone, taps=taps, features_only=True), (torch.zeros(2, size, size, 3, dtype=torch.uint8),),
            path, ["pixels"], outputs, {name: {0: "n"} for name in ["pixels"] + outputs})


def feature_session(backbone_name: str, taps: Sequence[str]):
    """A session over ``features.onnx`` for backbone_name (training's feature extraction)."""
    from adapter.embed import starter

    size = starter.backbone_image_size(backbone_name)
    path = cache_dir() / "starter-onnx" / f"features-{backbone_name}-{cache_key(backbone_name, *taps)}.onnx"
    export_once(path, lambda tmp: export_feature_tower(starter.load_backbone(backbone_name), taps, size, tmp))
    return session(path)


# -- text ---------------------------------------------------------------------------------
class TextTower(torch.nn.Module):
    """MiniLM (mean pooling, L2-normalised, as sentence-transformers computes it) + text head."""

    def __init__(self, bert: torch.nn.Module, heads):
        super().__init__()
        self.bert, self.heads = bert, heads

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.heads.text(torch.nn.functional.normalize(emb, dim=-1))


def export_text_tower(heads, path: Path) -> None:
    from transformers import AutoModel

    from adapter.embed import starter

    bert = AutoModel.from_pretrained(starter.text_model_path(), local_files_only=True, attn_implementation="eager")
    ids = torch.ones(2, 7, dtype=torch.long)
    _export(TextTower(bert.eval(), heads), (ids, torch.ones_like(ids)), path, ["input_ids", "attention_mask"], ["text"],
            {"input_ids": {0: "n", 1: "len"}, "attention_mask": {0: "n", 1: "len"}, "text": {0: "n"}})


def tokenizer(max_length: int):
    """MiniLM's fast tokenizer (the ``tokenizers`` library), truncating as sentence-transformers does."""
    from tokenizers import Tokenizer

    from adapter.embed import starter

    tok = Tokenizer.from_file(str(Path(starter.text_model_path()) / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding()
    return tok


class OnnxTowers:
    """A starter model's two exported towers, run by ONNX Runtime."""

    def __init__(self, heads, heads_bytes: bytes, backbone_name: str, image_size: int, max_text_length: int,
                 cache: Path | None = None):
        from adapter.embed import starter

        root = cache_dir(cache) / "starter-onnx"
        key = cache_key(heads_bytes, backbone_name, str(image_size))
        image_path = root / f"image-{key}.onnx"
        text_path = root / f"text-{key}.onnx"
        export_once(image_path, lambda tmp: export_image_tower(starter.load_backbone(backbone_name), heads, image_size, tmp))
        export_once(text_path, lambda tmp: export_text_tower(heads, tmp))
        self.image_session, self.text_session = session(image_path), session(text_path)
        self.with_colour = len(self.image_session.get_inputs()) > 1
        self.tokenizer = tokenizer(max_length=max_text_length)
        self.paths = (image_path, text_path)

    def image(self, pixels: np.ndarray, colour: np.ndarray | None) -> np.ndarray:
        feeds = {"pixels": np.ascontiguousarray(pixels, dtype=np.uint8)}
        if self.with_colour:
            feeds["colour"] = colour
        return self.image_session.run(None, feeds)[0]

    def text(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return self.text_session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
