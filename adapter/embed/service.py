"""Images and texts → vectors for ingest (bulk) and queries (one at a time, many at once).

Bulk (``embed_images``): decode + preprocess run in a thread pool (PIL and numpy release
the GIL) a few batches ahead of the model, so on a 2-core machine the forward pass of
batch k overlaps the decoding of batch k+1. One bad image yields an ``ImageError`` in its
slot; the others are still embedded.

Queries (``embed_text`` / ``embed_image``): a micro-batcher per (model, modality) runs a
query at once when the model is idle; queries that arrive while it is busy wait and then
share the next forward pass (so batches grow with load and a lone caller never waits).
``max_wait_ms`` (0 by default) adds a window after the first query for more to join.

Fast path protocol (optional, used when an encoder has both):
``encoder.preprocess(PIL.Image) -> np.ndarray`` (one model input) and
``encoder.encode_pixels(np.ndarray stacked inputs) -> (n, d) float32`` (or its alias
``encode_preprocessed``, the starter model's name for it);
``encoder.draft_size`` (int) lets JPEGs decode at reduced scale. Encoders without them get
decoded ``PIL.Image`` lists through ``encode_images``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from adapter.embed.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode_image
from adapter.errors import AdapterError, EmbedError, ImageError

_STOP = object()


class EmbeddingService:
    def __init__(self, registry, *, workers: int | None = None, max_wait_ms: float = 0.0,
                 max_query_batch: int = 64, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS, prefetch_batches: int = 2):
        self.registry = registry
        self.workers = workers or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_query_batch = max_query_batch
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.prefetch_batches = prefetch_batches
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embed-decode")
        self._batchers: dict[tuple[str, str], _MicroBatcher] = {}
        self._lock = threading.Lock()

    # -- bulk --------------------------------------------------------------------
    def embed_images(self, model: str, images: Sequence[bytes]) -> list[np.ndarray | ImageError]:
        """One vector (float32, (d,)) or ImageError per input, in order; raises only EmbedError."""
        enc = self.registry.get(model)
        n = len(images)
        results: list[Any] = [None] * n
        if n == 0:
            return results
        bs = max(1, int(getattr(enc, "batch_size", 32)))
        prepare = self._preparer(enc)
        # Submit a bounded window of work ahead of the model (memory stays O(window)).
        window = bs * (self.prefetch_batches + 1)
        pending: deque[tuple[int, Future]] = deque()
        next_i = 0

        def top_up():
            nonlocal next_i
            while next_i < n and len(pending) < window:
                pending.append((next_i, self._pool.submit(prepare, images[next_i])))
                next_i += 1

        top_up()
        while pending:
            idx, items = [], []
            while pending and len(items) < bs:
                i, fut = pending.popleft()
                item = fut.result()
                if isinstance(item, ImageError):
                    results[i] = item
                else:
                    idx.append(i)
                    items.append(item)
                top_up()
            if items:
                vecs = self._encode_prepared(enc, items)
                for i, v in zip(idx, vecs):
                    results[i] = v
        return results

    def embed_texts(self, model: str, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32."""
        enc = self.registry.get(model)
        return _guard(lambda: enc.encode_texts(list(texts)), model)

    # -- queries (micro-batched) -----------------------------------------------------
    def embed_text(self, model: str, text: str) -> np.ndarray:
        return self._batcher(model, "text").submit(str(text))

    def embed_image(self, model: str, data: bytes) -> np.ndarray:
        """One image → (d,) float32; raises ImageError for bad bytes."""
        enc = self.registry.get(model)
        item = self._preparer(enc)(data)  # decode in the caller's thread: parallel across callers
        if isinstance(item, ImageError):
            raise item
        return self._batcher(model, "image").submit(item)

    def encoder(self, model: str):
        return self.registry.get(model)

    def warm(self, model: str) -> None:
        """One text and one small image through the query path: loads what a model loads
        lazily (the starter model's text tower), starts both micro-batchers and pays torch's
        first-call set-up, so a service's first query is as fast as its tenth."""
        self.embed_text(model, "a photo")
        self.embed_image(model, _warm_up_image())

    def close(self) -> None:
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for b in batchers:
            b.close()
        self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals -------------------------------------------------------------------
    def _preparer(self, enc) -> Callable[[bytes], Any]:
        fast = callable(getattr(enc, "preprocess", None)) and _pixel_encoder(enc) is not None
        draft = getattr(enc, "draft_size", None) if fast else None
        max_bytes, max_pixels = self.max_bytes, self.max_pixels

        def prepare(data: bytes):
            try:
                img = decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels, draft_size=draft)
                return enc.preprocess(img) if fast else img
            except ImageError as exc:
                return exc
            except Exception as exc:  # a preprocessing bug must cost one image, not the batch
                return ImageError(f"image could not be preprocessed: {exc}")

        return prepare

    def _encode_prepared(self, enc, items: list) -> list[np.ndarray]:
        encode_pixels = _pixel_encoder(enc)
        if isinstance(items[0], np.ndarray) and encode_pixels is not None:
            out = _guard(lambda: encode_pixels(np.stack(items)), enc.name)
        else:
            out = _guard(lambda: enc.encode_images(items), enc.name)
        return list(np.asarray(out, dtype=np.float32))

    def _batcher(self, model: str, modality: str) -> "_MicroBatcher":
        key = (model, modality)
        b = self._batchers.get(key)
        if b is not None:
            return b
        enc = self.registry.get(model)  # raise EmbedError for unknown models before starting a thread
        with self._lock:
            b = self._batchers.get(key)
            if b is None:
                if modality == "text":
                    fn = lambda texts: _guard(lambda: enc.encode_texts(texts), model)  # noqa: E731
                else:
                    fn = lambda items: np.stack(self._encode_prepared(enc, items))  # noqa: E731
                b = _MicroBatcher(fn, self.max_query_batch, self.max_wait_s, name=f"embed-{model}-{modality}")
                self._batchers[key] = b
        return b


class _MicroBatcher:
    """Runs queued single requests as one call of ``fn(list) -> (n, d)``: everything queued
    when the model frees up (plus whatever arrives within ``max_wait_s``, if set)."""

    def __init__(self, fn: Callable[[list], np.ndarray], max_batch: int, max_wait_s: float, name: str):
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.batches = 0  # forward passes run (for tests and metrics)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item) -> np.ndarray:
        fut: Future = Future()
        self._queue.put((item, fut))
        return fut.result()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.perf_counter() + self.max_wait_s
            stop = False
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._execute(batch)
            if stop:
                return

    def _execute(self, batch: list) -> None:
        self.batches += 1
        try:
            out = self.fn([item for item, _ in batch])
            for (_, fut), vec in zip(batch, out):
                fut.set_result(np.asarray(vec, dtype=np.float32))
        except BaseException as exc:  # every waiter must wake up, with the error
            err = exc if isinstance(exc, AdapterError) else EmbedError(f"embedding failed: {exc}")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)


def _warm_up_image() -> bytes:
    """A small JPEG, made here: the decode path a real query takes, with no file to ship."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 160, 200)).save(out, format="JPEG")
    return out.getvalue()


def _pixel_encoder(enc) -> Callable[[np.ndarray], np.ndarray] | None:
    for attr in ("encode_pixels", "encode_preprocessed"):
        fn = getattr(enc, attr, None)
        if callable(fn):
            return fn
    return None


def _guard(call: Callable[[], np.ndarray], model: str) -> np.ndarray:
    """Model failures on valid input become EmbedError (503), never a bare exception."""
    try:
        return np.asarray(call(), dtype=np.float32)
    except AdapterError:
        raise
    except Exception as exc:
        raise EmbedError(f"model '{model}' failed: {exc}") from None
