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
