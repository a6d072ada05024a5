"""sentence-transformers CLIP checkpoints (``SentenceTransformer(dir)`` with a CLIP module).

Loading goes through sentence-transformers itself. When the pipeline is the usual
"CLIP module [+ Normalize]", encoding then uses the wrapped transformers ``CLIPModel``
directly (the shared :class:`TorchClipEncoder`): same weights and numerics as
``SentenceTransformer.encode`` — the tests check that — but with our fast preprocessing
that the service can run in worker threads. Other pipelines (extra Dense layers...) fall
back to ``SentenceTransformer.encode``.

Vectors: float32, L2-normalised when the spec says ``normalize`` (default) or the
pipeline ends with a Normalize module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from adapter.embed.clip_hf import TorchClipEncoder
from adapter.embed.preprocess import ClipPreprocess
from adapter.embed.runtime import configure_torch_threads, l2_normalize, pick_device
from adapter.errors import EmbedError


class STClipEncoder(TorchClipEncoder):
    @classmethod
    def load(cls, spec):
        from sentence_transformers import SentenceTransformer

        configure_torch_threads()
        source = str(spec.path or spec.hub_id)
        if spec.path is not None and not Path(spec.path).is_dir():
            raise EmbedError(f"model '{spec.name}': sentence-transformers directory {spec.path} does not exist")
        device = pick_device(spec.device)
        try:
            st = SentenceTransformer(source, device=device, local_files_only=spec.hub_id is None)
        except Exception as exc:
            raise EmbedError(f"model '{spec.name}': cannot load sentence-transformers model {source}: {exc}") from None
        modules = list(st)
        first = modules[0] if modules else None
        hf = getattr(first, "model", None) or getattr(first, "auto_model", None)
        processor = getattr(first, "processor", None)
        rest = [type(m).__name__ for m in modules[1:]]
        normalize = spec.normalize or "Normalize" in rest
        simple = all(n == "Normalize" for n in rest)
        if simple and type(hf).__name__ == "CLIPModel" and processor is not None:
            preprocess = ClipPreprocess.from_image_processor(processor)
            if spec.image_size:
                preprocess = ClipPreprocess(size=spec.image_size, crop=spec.image_size, mean=preprocess.mean,
                                            std=preprocess.std, resample=preprocess.resample)
            tokenizer = getattr(processor, "tokenizer", processor)
            return cls(spec.name, hf, tokenizer, preprocess, device=device, normalize=normalize,
                       batch_size=spec.batch_size)
        return GenericSTEncoder(spec.name, st, normalize=normalize, batch_size=spec.batch_size)


class GenericSTEncoder:
    """Any sentence-transformers model that embeds both images and texts, via ``encode``."""

    def __init__(self, name: str, st, *, normalize: bool, batch_size: int):
        self.name = name
        self.st = st
        self.normalized = normalize
        self.batch_size = batch_size
        dim = st.get_sentence_embedding_dimension()
        self.dimension = int(dim) if dim else int(self.encode_texts(["probe"]).shape[1])

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._encode(list(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([str(t) for t in texts])

    def _encode(self, items: list) -> np.ndarray:
        if not items:
            return np.zeros((0, getattr(self, "dimension", 0)), dtype=np.float32)
        x = self.st.encode(items, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        x = np.asarray(x, dtype=np.float32)
        return l2_normalize(x) if self.normalized else x
