"""EmbeddingService: per-item errors in bulk, pipelined results equal direct encoding,
micro-batched queries equal unbatched ones, and failures reach every waiter."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from adapter.datasets import dataset_images
from adapter.embed.images import decode_image
from adapter.embed.registry import ModelRegistry
from adapter.embed.service import EmbeddingService
from adapter.embed.testing import make_tiny_clip, tiny_clip_registry_config
from adapter.errors import EmbedError, ImageError


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    path = make_tiny_clip(tmp_path_factory.mktemp("tiny") / "clip")
    svc = EmbeddingService(ModelRegistry.from_config(tiny_clip_registry_config(path), env={}))
    yield svc
    svc.close()


def jpeg(seed: int, size=(90, 60)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_bulk_keeps_order_and_isolates_bad_images(service):
    good = [jpeg(i) for i in range(40)]
    real = [p.read_bytes() for p in dataset_images("fashion-10k", 10)]
    data = good[:20] + [b"not an image", good[0][:300]] + good[20:] + real + [b""]
    out = service.embed_images("clip", data)
    assert len(out) == len(data)
    bad = [i for i, v in enumerate(out) if isinstance(v, ImageError)]
    assert bad == [20, 21, len(data) - 1]
    enc = service.encoder("clip")
    direct = enc.encode_images([decode_image(d, draft_size=enc.draft_size) for i, d in enumerate(data) if i not in bad])
    got = np.stack([v for v in out if not isinstance(v, ImageError)])
    assert got.dtype == np.float32 and got.shape == (len(data) - 3, 512)
    assert np.abs(got - direct).max() < 1e-5


def test_bulk_of_only_bad_and_empty(service):
    assert service.embed_images("clip", []) == []
    out = service.embed_images("clip", [b"x", b"y"])
    assert all(isinstance(v, ImageError) for v in out)


def test_texts_and_single_queries(service):
    texts = [f"query number {i}" for i in range(5)]
    batch = service.embed_texts("clip", texts)
    assert batch.shape == (5, 512) and batch.dtype == np.float32
    for i, t in enumerate(texts):
        assert np.abs(service.embed_text("clip", t) - batch[i]).max() < 1e-5
    img = jpeg(7)
    assert np.abs(service.embed_image("clip", img) - service.embed_images("clip", [img])[0]).max() < 1e-5
    with pytest.raises(ImageError):
        service.embed_image("clip", b"garbage")
    with pytest.raises(EmbedError, match="unknown vector model"):
        service.embed_text("nope", "x")


def test_concurrent_queries_equal_unbatched(service):
    texts = [f"a photo of thing {i}" for i in range(24)]
    images = [jpeg(100 + i) for i in range(12)]
    ref_t = service.embed_texts("clip", texts)
    ref_i = np.stack(service.embed_images("clip", images))
    got_t, got_i, errors = {}, {}, []

    def ask_text(i):
        try:
            got_t[i] = service.embed_text("clip", texts[i])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def ask_image(i):
        try:
            got_i[i] = service.embed_image("clip", images[i])
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=ask_text, args=(i,)) for i in range(len(texts))]
    threads += [threading.Thread(target=ask_image, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert max(np.abs(got_t[i] - ref_t[i]).max() for i in range(len(texts))) < 1e-5
    assert max(np.abs(got_i[i] - ref_i[i]).max() for i in range(len(images))) < 1e-5


class _GatedEncoder:
    """Blocks its first call until released, so later requests pile up deterministically."""

    name, dimension, normalized = "gated", 4, False

    def __init__(self):
        self.release = threading.Event()
        self.calls: list[list[str]] = []

    def encode_texts(self, texts):
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.release.wait(10)
        if any(t == "boom" for t in texts):
            raise RuntimeError("model exploded")
        return np.array([[len(t), 1, 2, 3] for t in texts], dtype=np.float32)

    def encode_images(self, images):  # pragma: no cover - not used here
        raise NotImplementedError


class _Registry:
    def __init__(self, enc):
        self.enc = enc

    def get(self, name):
        if name != "gated":
            raise EmbedError(f"unknown vector model '{name}'")
        return self.enc


def _wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.005)


def test_waiting_queries_share_one_forward_pass():
    enc = _GatedEncoder()
    svc = EmbeddingService(_Registry(enc), max_wait_ms=1)
    results = {}
    words = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g" * 7, "h" * 8]

    def ask(w):
        results[w] = svc.embed_text("gated", w)

    first = threading.Thread(target=ask, args=(words[0],))
    first.start()
    _wait_until(lambda: len(enc.calls) == 1)
    rest = [threading.Thread(target=ask, args=(w,)) for w in words[1:]]
    for t in rest:
        t.start()
    batcher = svc._batchers[("gated", "text")]
    _wait_until(lambda: batcher._queue.qsize() == len(words) - 1)
    enc.release.set()
    for t in [first, *rest]:
        t.join()
    svc.close()
    assert enc.calls[0] == ["a"]
    assert sorted(enc.calls[1]) == sorted(words[1:])  # all waiting queries in ONE call
    assert len(enc.calls) == 2
    for w in words:
        assert results[w][0] == len(w)


def test_model_failure_reaches_every_waiter():
    enc = _GatedEncoder()
    enc.release.set()
    svc = EmbeddingService(_Registry(enc), max_wait_ms=50)
    errors = []

    def ask(w):
        try:
            svc.embed_text("gated", w)
        except EmbedError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=ask, args=(w,)) for w in ["boom", "boom", "boom"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    svc.close()
    assert len(errors) == 3 and all("model exploded" in e for e in errors)


class _PilOnlyEncoder:
    """No fast path: the service must hand it decoded RGB PIL images."""

    name, dimension, normalized = "pil", 3, False

    def encode_images(self, images):
        assert all(im.mode == "RGB" for im in images)
        return np.array([np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) for im in images], dtype=np.float32)

    def encode_texts(self, texts):  # pragma: no cover - not used here
        raise NotImplementedError


class _PreprocessedAliasEncoder(_PilOnlyEncoder):
    """The starter model's spelling of the fast path: preprocess + encode_preprocessed."""

    name = "alias"

    def __init__(self):
        self.batches = []

    def preprocess(self, img):
        return np.asarray(img.resize((8, 8)), dtype=np.float32).mean(axis=(0, 1))

    def encode_preprocessed(self, batch):
        self.batches.append(len(batch))
        return np.asarray(batch, dtype=np.float32)


def test_encoders_without_and_with_aliased_fast_path():
    png = io.BytesIO()
    Image.new("RGB", (10, 10), (10, 20, 30)).save(png, "PNG")
    data = [png.getvalue(), b"bad", png.getvalue()]
    for enc in (_PilOnlyEncoder(), _PreprocessedAliasEncoder()):
        svc = EmbeddingService(_RegistryOf(enc))
        out = svc.embed_images(enc.name, data)
        svc.close()
        assert isinstance(out[1], ImageError)
        assert np.allclose(out[0], [10, 20, 30]) and np.allclose(out[2], [10, 20, 30])
        if isinstance(enc, _PreprocessedAliasEncoder):
            assert enc.batches == [2]


class _RegistryOf:
    def __init__(self, enc):
        self.enc = enc

    def get(self, name):
        return self.enc
