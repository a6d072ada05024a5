"""Hugging Face ``CLIPModel`` checkpoints (a local directory, or a hub id the user configured).

Vectors: float32, ``projection_dim`` wide (512 for ViT-B CLIP), L2-normalised when the spec
says ``normalize`` (the default, and what CLIP was trained for: cosine similarity, so inner
product == cosine and squared L2 == 2 - 2*cosine).

Images are preprocessed by :class:`ClipPreprocess` (PIL + numpy, same numerics as
``CLIPImageProcessor``) so the service can run it in worker threads while the model runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from adapter.embed.preprocess import ClipPreprocess
from adapter.embed.runtime import configure_torch_threads, l2_normalize, pick_device
from adapter.errors import EmbedError


class TorchClipEncoder:
    """A CLIP-shaped torch model: ``vision_model``/``visual_projection`` and text counterparts.

    Subclasses only decide how to load; encoding is shared (hf_clip and st_clip use it).
    """

    def __init__(self, name: str, model, tokenizer, preprocess: ClipPreprocess, *,
                 device: str = "cpu", normalize: bool = True, batch_size: int = 32,
                 max_text_length: int = 77):
        import torch

        self.name = name
        self.device = device
        self.normalized = normalize
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.draft_size = preprocess.size  # JPEG draft decode never goes below the resize target
        self.tokenizer = tokenizer
        self.max_text_length = min(max_text_length, getattr(model.config.text_config, "max_position_embeddings", 77))
        self.model = model.to(device).eval()
        self.dimension = int(model.config.projection_dim)
        self._torch = torch

    # -- images ------------------------------------------------------------------
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(self.preprocess.batch(list(images)))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 3, H, W) float32 from ``self.preprocess`` → (n, dimension) float32."""
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(pixels), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(pixels[i:i + self.batch_size])).to(self.device)
                pooled = self.model.vision_model(pixel_values=x).pooler_output
                out.append(self.model.visual_projection(pooled).float().cpu().numpy())
        return self._finish(out)

    # -- texts -------------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        texts = [str(t) for t in texts]
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                tok = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                     max_length=self.max_text_length, return_tensors="pt")
                pooled = self.model.text_model(input_ids=tok["input_ids"].to(self.device),
                                               attention_mask=tok["attention_mask"].to(self.device)).pooler_output
                out.append(self.model.text_projection(pooled).float().cpu().numpy())
        return self._finish(out)

    def _finish(self, parts: list[np.ndarray]) -> np.ndarray:
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        x = np.concatenate(parts).astype(np.float32, copy=False)
        return l2_normalize(x) if self.normalized else x


class HFClipEncoder(TorchClipEncoder):
    @classmethod
    def load(cls, spec) -> "HFClipEncoder":
        from transformers import CLIPModel, CLIPTokenizer

        configure_torch_threads()
        source = spec.path or spec.hub_id
        local_only = spec.hub_id is None
        if spec.path is not None and not Path(spec.path).is_dir():
            raise EmbedError(f"model '{spec.name}': CLIP directory {spec.path} does not exist")
        try:
            model = CLIPModel.from_pretrained(str(source), local_files_only=local_only)
            tokenizer = CLIPTokenizer.from_pretrained(str(source), local_files_only=local_only)
            preprocess = _hf_preprocess(source, local_only, spec.image_size)
        except EmbedError:
            raise
        except Exception as exc:  # missing files, bad config, hub unreachable
            raise EmbedError(f"model '{spec.name}': cannot load CLIP from {source}: {exc}") from None
        return cls(spec.name, model, tokenizer, preprocess, device=pick_device(spec.device),
                   normalize=spec.normalize, batch_size=spec.batch_size)


def _hf_preprocess(source, local_only: bool, image_size: int | None) -> ClipPreprocess:
    path = Path(str(source))
    if path.is_dir() and (path / "preprocessor_config.json").exists():
        pre = ClipPreprocess.from_hf_config(path)
    elif not local_only:
        from huggingface_hub import hf_hub_download

        pre = ClipPreprocess.from_hf_config(hf_hub_download(str(source), "preprocessor_config.json"))
    else:
        pre = ClipPreprocess()
    if image_size:
        pre = ClipPreprocess(size=image_size, crop=image_size, mean=pre.mean, std=pre.std, resample=pre.resample)
    return pre
