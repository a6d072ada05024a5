"""Query content → a query vector: the one entry point for HA queries and the vector service.

Errors map one way wherever the content came from: the client's fault (no model on the
table, text that is empty or not UTF-8) is a QueryError (400) at the client's location;
the service's (the model fails, or returns vectors of another dimension than the table's)
is an EmbedError (503).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from adapter.embed.base import Embedder
from adapter.errors import EmbedError, QueryError
from adapter.schema.model import TableSpec


def embed_content(embedder: Embedder, spec: TableSpec, content: bytes | str,
                  modal: Literal["text", "image"], location: str) -> np.ndarray:
    """One (dimension,) float32 vector for text (str, or UTF-8 bytes) or image bytes."""
    if spec.embedding is None:
        raise QueryError(f"table {spec.name!r} has no built-in vector model to embed {modal} content", location)
    model = spec.embedding.model
    if modal == "image":
        vec = embedder.embed_image(model, content)
    else:
        if isinstance(content, bytes):
            try:
                content = content.decode("utf-8")
            except UnicodeDecodeError:
                raise QueryError("text content is not UTF-8", location) from None
        if not content.strip():
            raise QueryError("empty text content", location)
        vec = embedder.embed_text(model, content)
    vec = np.asarray(vec, dtype=np.float32).reshape(-1)
    if vec.shape[0] != spec.dimension:
        raise EmbedError(f"model {model!r} returns {vec.shape[0]} dimensions, table {spec.name!r} "
                         f"expects {spec.dimension}", "model")
    return vec
