"""Shared test data for the query tests: a small product table and its brute force."""

from __future__ import annotations

import numpy as np

from adapter.plan.records import Document

DIM = 8
N = 150
BRANDS = ["acme", "bolt", "crux"]


def schema(distance: str, index_type: str = "Linear", index_name: str = "vec_index") -> dict:
    return {
        "fields": [
            {"field_name": "id", "field_type": "INT64"},
            {"field_name": "cate_id", "field_type": "INT64"},
            {"field_name": "price", "field_type": "DOUBLE"},
            {"field_name": "brand", "field_type": "STRING"},
            {"field_name": "vector_source_image", "field_type": "STRING"},
            {"field_name": "vector", "field_type": "FLOAT", "multi_value": True,
             "user_defined_param": {"vector_model": "clip", "vector_modal": "image",
                                    "vector_source_field": "vector_source_image"}},
        ],
        "indexs": [
            {"index_name": "id", "index_type": "PRIMARYKEY64", "index_fields": "id"},
            {"index_name": index_name, "index_type": "CUSTOMIZED", "indexer": "aitheta2_indexer",
             "index_fields": [{"field_name": "id", "boost": 1}, {"field_name": "vector", "boost": 1}],
             "parameters": {"dimension": str(DIM), "distance_type": distance,
                            "vector_index_type": index_type, "embedding_delimiter": ",",
                            "is_embedding_saved": "true"}},
        ],
    }


class Data:
    def __init__(self, engine, table, distance):
        rng = np.random.default_rng(7 if distance == "L2" else 11)
        self.engine, self.table = engine, table
        self.ip = distance == "IP"
        self.vecs = rng.normal(size=(N, DIM)).astype(np.float32)
        self.ids = np.arange(1, N + 1)
        self.cate = rng.integers(0, 5, N)
        self.price = np.round(rng.uniform(1, 100, N), 2)
        self.brand = [BRANDS[i] for i in rng.integers(0, 3, N)]
        self.rng = rng

    def docs(self):
        return [Document(pk=int(self.ids[i]), vector=self.vecs[i],
                         fields={"cate_id": int(self.cate[i]), "price": float(self.price[i]),
                                 "brand": self.brand[i], "vector_source_image": f"img/{i}.png"})
                for i in range(N)]

    def scores(self, q):
        q = np.asarray(q, dtype=np.float32)
        return self.vecs @ q if self.ip else ((self.vecs - q) ** 2).sum(1)

    def topn(self, q, n, mask=None):
        """Brute force: indices best-first and all scores."""
        s = self.scores(q)
        idx = np.arange(N) if mask is None else np.flatnonzero(mask)
        order = idx[np.argsort(-s[idx] if self.ip else s[idx], kind="stable")]
        return order[:n], s



class HashEmbedder:
    """Deterministic stand-in for EmbeddingService: text/image bytes → a fixed vector."""

    def __init__(self):
        self.calls = []

    def _vec(self, data: bytes) -> np.ndarray:
        seed = int.from_bytes(data[:8].ljust(8, b"\0"), "little") ^ len(data)
        return np.random.default_rng(seed).normal(size=DIM).astype(np.float32)

    def embed_text(self, model, text):
        self.calls.append((model, "text", text))
        return self._vec(text.encode())

    def embed_image(self, model, data):
        self.calls.append((model, "image", data))
        return self._vec(data)
