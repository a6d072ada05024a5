"""The encoder protocol every vector model implements (CLIP checkpoints, starter models).

Vectors are float32, shape (n, dimension). ``normalized`` says whether the model returns
L2-normalised vectors (CLIP-style models do: then squared L2 = 2 - 2 * cosine).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image


@runtime_checkable
class Encoder(Protocol):
    name: str
    dimension: int
    normalized: bool

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Decoded RGB images → (n, dimension) float32."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts → (n, dimension) float32, in the same space as the images."""


@runtime_checkable
class Embedder(Protocol):
    """What ingest and queries embed with (``EmbeddingService``): models named per call."""

    def embed_images(self, model: str, images: Sequence[bytes]) -> list:
        """One float32 vector or ImageError per image, in order."""

    def embed_texts(self, model: str, texts: Sequence[str]) -> np.ndarray: ...

    def embed_text(self, model: str, text: str) -> np.ndarray: ...

    def embed_image(self, model: str, data: bytes) -> np.ndarray: ...
