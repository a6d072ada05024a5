"""Shared pieces for tests/test_ingest_*.py: real components started by the tests.

- ``s3_server``: moto's standalone S3 server on loopback (a real HTTP S3 endpoint).
- ``tiny_registry`` / ``make_embedder``: the tiny random CLIP through the model registry.
- ``engine_factory``: the embedded engine (faiss + SQLite) in a temp dir.
- ``CountingEmbedder`` / ``RejectingEngine``: wrappers that count calls or inject faults.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from adapter.datasets import datasets_dir
from adapter.plan.records import WriteFailure, WriteResult

DATASETS = datasets_dir() or Path("/work/shared/datasets")  # absent: photo_paths skips

S3_KEY = "AKIAIOSFODNN7EXAMPLE"
S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def photo_paths(subset: str, count: int) -> list[Path]:
    folder = DATASETS / subset / "images"
    if not folder.is_dir():
        pytest.skip(f"shared dataset {subset} not found at {folder} (see /work/shared/datasets/README.md)")
    return sorted(folder.iterdir())[:count]


def png_bytes(seed: int, size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


CORRUPT_JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64  # JPEG magic, then nothing decodable


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the moto server; returns (endpoint, bucket, boto3 client)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET)
    name = "b" + format(abs(hash(request.node.nodeid)) % 10**10, "010d")
    client.create_bucket(Bucket=name)
    return s3_server, name, client


@pytest.fixture
def no_retry_sleep(monkeypatch):
    """botocore still retries (the code path under test) but without its backoff sleeps."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)


def fault_hook(client: Any, *, key_part: str, status: int | None = None, timeout: bool = False,
               times: int | None = None) -> dict[str, int]:
    """Make GetObject for keys containing ``key_part`` fail (HTTP ``status`` or a read timeout)
    ``times`` times (None: always). Returns a counter of attempts seen."""
    from botocore.awsrequest import AWSResponse
    from botocore.exceptions import ReadTimeoutError
    from urllib.parse import unquote

    seen = {"attempts": 0}
    lock = threading.Lock()

    class _Raw:
        def stream(self, **_: Any):
            yield b""

    def hook(request, **_: Any):
        if key_part not in unquote(request.url):
            return None
        with lock:
            seen["attempts"] += 1
            if times is not None and seen["attempts"] > times:
                return None
        if timeout:
            raise ReadTimeoutError(endpoint_url=request.url)
        return AWSResponse(request.url, status, {}, _Raw())

    client.meta.events.register("before-send.s3.GetObject", hook)
    return seen


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory):
    from adapter.embed.registry import ModelRegistry
    from adapter.embed.testing import make_tiny_clip, tiny_clip_registry_config

    path = make_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "clip")
    return ModelRegistry.from_config(tiny_clip_registry_config(path))


@pytest.fixture(scope="session")
def embedder(tiny_registry):
    from adapter.embed.service import EmbeddingService

    service = EmbeddingService(tiny_registry, workers=2)
    yield service
    service.close()


class CountingEmbedder:
    """Wraps an embedder; counts every image it is asked to embed."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.images = 0
        self.lock = threading.Lock()

    def embed_images(self, model, images):
        with self.lock:
            self.images += len(images)
        return self.inner.embed_images(model, images)

    def __getattr__(self, name):
        return getattr(self.inner, name)


# --------------------------------------------------------------------------- engines


@pytest.fixture
def engine(tmp_path):
    from adapter.engines.embedded import EmbeddedEngine

    eng = EmbeddedEngine(tmp_path / "engine")
    yield eng
    eng.close()


class RejectingEngine:
    """Delegates to a real engine but rejects documents whose pk is in ``reject``, and can
    crash (like a killed process) on the N-th upsert."""

    def __init__(self, inner: Any, reject: set = frozenset(), crash_on_upsert: int | None = None):
        self.inner = inner
        self.reject = {str(pk) for pk in reject}
        self.crash_on_upsert = crash_on_upsert
        self.upserts = 0

    def upsert(self, table, docs, *, generation=None):
        self.upserts += 1
        if self.crash_on_upsert is not None and self.upserts == self.crash_on_upsert:
            raise RuntimeError("simulated crash during bulk write")
        keep = [d for d in docs if str(d.pk) not in self.reject]
        result = self.inner.upsert(table, keep, generation=generation)
        failures = list(result.failures) + [WriteFailure(d.pk, "rejected by test engine")
                                            for d in docs if str(d.pk) in self.reject]
        return WriteResult(written=result.written, failures=failures)

    def __getattr__(self, name):
        return getattr(self.inner, name)
