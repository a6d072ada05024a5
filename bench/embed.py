"""Embedding throughput and latency. Prints figures; asserts nothing.

    PYTHONPATH=. python bench/embed.py --n 300                    # model 'clip' from the registry
    PYTHONPATH=. python bench/embed.py --model-dir /models/clip   # any HF/ST/ONNX CLIP dir
    PYTHONPATH=. python bench/embed.py --synthetic vit-b32        # random ViT-B/32-sized CLIP

(a) encoder only: images/s on already decoded + preprocessed batches (the model's ceiling)
(b) end to end: images/s from JPEG files through decode, preprocess, encode (EmbeddingService)
b/a: how close the pipeline gets to the model's ceiling (target >= 0.9).
Starter models run in ONNX Runtime; (a) is also measured for the same model in torch (its
fallback) on the same pixels in the same run, and printed as a ratio.
Text: batched encodes/s; single-query latency p50/p99 sequentially (micro-batcher path and
direct encoder call), and queries/s with concurrent callers. Peak RSS from getrusage.

When the registry's model cannot load (no starter weights, no checkpoint configured), the
benchmark falls back to a random CLIP with ViT-B/32 sizes: same compute as real CLIP.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapter.datasets import datasets_dir  # noqa: E402
from adapter.embed.images import decode_image  # noqa: E402
from adapter.embed.registry import ModelRegistry  # noqa: E402
from adapter.embed.service import EmbeddingService  # noqa: E402
from adapter.errors import EmbedError  # noqa: E402

VIT_B32 = dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           patch_size=32),
               text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8))
TINY = dict(vision=None, text=None)


def build_registry(args) -> tuple[ModelRegistry, str, str]:
    if args.model_dir:
        spec = {"path": str(args.model_dir), "device": args.device, "batch_size": args.batch_size}
        return ModelRegistry.from_config({"models": {"bench": spec}}, env={}), "bench", f"dir {args.model_dir}"
    if not args.synthetic:
        reg = ModelRegistry.from_config(args.config)
        try:
            reg.get(args.model)
            return reg, args.model, f"registry model '{args.model}' ({reg.spec(args.model).kind})"
        except EmbedError as exc:
            print(f"note: {exc}\n      falling back to a random ViT-B/32-sized CLIP", file=sys.stderr)
            args.synthetic = "vit-b32"
    from adapter.embed.testing import make_tiny_clip

    sizes = VIT_B32 if args.synthetic == "vit-b32" else TINY
    size = 224 if args.synthetic == "vit-b32" else 64
    path = make_tiny_clip(Path(tempfile.mkdtemp(prefix="bench-clip-")) / "clip", image_size=size, **sizes)
    spec = {"kind": "hf_clip", "path": str(path), "device": args.device, "batch_size": args.batch_size}
    return ModelRegistry.from_config({"models": {"bench": spec}}, env={}), "bench", f"random CLIP ({args.synthetic})"


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f}/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="clip")
    ap.add_argument("--config", type=Path, default=None, help="registry YAML/TOML (default: env / built-in)")
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--synthetic", choices=["vit-b32", "tiny"], default=None)
    ap.add_argument("--n", type=int, default=300, help="images per dataset")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="decode/preprocess threads (default: cores)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--no-torch", action="store_true", help="starter models: skip the torch comparison")
    args = ap.parse_args()

    import torch

    reg, name, label = build_registry(args)
    svc = EmbeddingService(reg, workers=args.workers)
    enc = reg.get(name)
    print(f"model: {label}; dim {enc.dimension}; device {getattr(enc, 'device', 'n/a')}; runtime {getattr(enc, 'runtime', 'n/a')}; "
          f"torch threads {torch.get_num_threads()}; decode workers {svc.workers}; cores {len(os.sched_getaffinity(0))}")

    root = datasets_dir()
    if root is None:
        sys.exit("shared datasets not found")
    sets = {s: sorted((root / s / "images").glob("*.jpg"))[: args.n] for s in ("flickr8k-1k", "fashion-10k")}
    encode_pixels = getattr(enc, "encode_pixels", None) or getattr(enc, "encode_preprocessed", None)
    fast = callable(encode_pixels) and callable(getattr(enc, "preprocess", None))
    draft = getattr(enc, "draft_size", None) if fast else None

    torch_twin = None
    if getattr(enc, "runtime", None) == "onnx" and not args.no_torch:
        from adapter.embed.starter import StarterEncoder

        torch_twin = StarterEncoder(enc.variant, runtime="torch")
        torch_twin.encode_preprocessed(np.stack([enc.preprocess(decode_image(sets["flickr8k-1k"][0].read_bytes()))]))

    # warm-up (first-call allocations, lazy init)
    svc.embed_images(name, [p.read_bytes() for p in sets["flickr8k-1k"][:8]])

    for set_name, files in sets.items():
        blobs = [p.read_bytes() for p in files]
        imgs = [decode_image(b, draft_size=draft) for b in blobs]
        if fast:
            pixels = np.stack([enc.preprocess(im) for im in imgs])
            t0 = time.perf_counter()
            for i in range(0, len(pixels), args.batch_size):
                encode_pixels(pixels[i:i + args.batch_size])
        else:
            t0 = time.perf_counter()
            for i in range(0, len(imgs), args.batch_size):
                enc.encode_images(imgs[i:i + args.batch_size])
        a = time.perf_counter() - t0
        del imgs
        t0 = time.perf_counter()
        out = svc.embed_images(name, [p.read_bytes() for p in files])
        b = time.perf_counter() - t0
        failed = sum(1 for v in out if not isinstance(v, np.ndarray))
        t0 = time.perf_counter()
        for blob in blobs:
            enc.preprocess(decode_image(blob, draft_size=draft)) if fast else decode_image(blob)
        d = time.perf_counter() - t0
        print(f"{set_name:12s} n={len(files)}  (a) encoder only {rate(len(files), a)}  "
              f"(b) end to end {rate(len(files), b)}  b/a {a / b:5.2f}  "
              f"[decode+preprocess alone, 1 thread {rate(len(files), d)}; failed {failed}]")
        if torch_twin is not None:
            t = _timed(lambda: [torch_twin.encode_preprocessed(pixels[i:i + args.batch_size])
                                for i in range(0, len(pixels), args.batch_size)])
            print(f"{'':12s} same model in torch (fallback): (a) encoder only {rate(len(files), t)}; "
                  f"{getattr(enc, 'runtime', '?')}/torch {t / a:4.1f}x")

    captions = _captions(root, 256)
    svc.embed_texts(name, captions[:4])  # warm-up
    t0 = time.perf_counter()
    svc.embed_texts(name, captions)
    t = time.perf_counter() - t0
    print(f"text batched: {rate(len(captions), t)} ({len(captions)} captions)")

    for label_, call in (("micro-batched embed_text", lambda q: svc.embed_text(name, q)),
                         ("direct encoder call     ", lambda q: enc.encode_texts([q]))):
        lat = []
        for q in captions[: args.queries]:
            t0 = time.perf_counter()
            call(q)
            lat.append((time.perf_counter() - t0) * 1000)
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"single query {label_}: p50 {statistics.median(lat):6.2f} ms  p99 {p99:6.2f} ms")

    for threads in (8,):
        qs = captions[: args.queries]
        t0 = time.perf_counter()
        _concurrent(lambda q: svc.embed_text(name, q), qs, threads)
        t = time.perf_counter() - t0
        batches = svc._batchers[(name, "text")].batches
        print(f"concurrent text queries ({threads} callers): {rate(len(qs), t)} "
              f"(forward passes so far: {batches})")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak_mb:.0f} MB")
    svc.close()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _captions(root: Path, n: int) -> list[str]:
    import csv

    with open(root / "flickr8k-1k" / "captions.csv", newline="") as fh:
        return [row["caption"] for _, row in zip(range(n), csv.DictReader(fh))]


def _concurrent(fn, items, threads):
    it = iter(items)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                q = next(it, None)
            if q is None:
                return
            fn(q)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


if __name__ == "__main__":
    main()
