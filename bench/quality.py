"""Retrieval quality of the vector models on public held-out data, side by side.

    PYTHONPATH=. python bench/quality.py                   # both starter variants, and main's beside them
    PYTHONPATH=. python bench/quality.py --baseline none   # the working tree's only
    PYTHONPATH=. python bench/quality.py --model clip --registry models.yaml   # a configured model

Every model is measured through its own encoder (for the starter models: ONNX Runtime, as
served). ``--baseline REF`` (default ``main``) adds the starter heads committed at that git
ref, run by the same code, so that "current" and "new" come out of one run. Prints, per model:

- flickr test: text→image R@1/5/10 (5 captions per photo, 200 photos);
- fashion test: product name→image R@1/5/10 and subCategory precision@10 (958 products),
  also with a cate_id (= subCategory) filter, and image→image subCategory P@10;
- clothing-parsing test (420 street photos of people): tag→image precision@10 for every tag
  worn in at least 20 test photos, queried as "a person wearing a {tag}" and as plain
  "{tag}"; the mean over tags of each, and each tag's (mean of the two forms) below;
- imagenet-sample zero-shot top-1/top-5 from "a photo of a {label}" (evaluation only);
- demo concepts: the share of bench/demo_concepts.csv's queries (fixed before training)
  whose photo comes first among the demo's 19, stored as the demo stores them.
Test splits come from splits.json; nothing here trains or tunes.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapter import demo  # noqa: E402
from adapter.embed import starter  # noqa: E402
from adapter.embed.training import data  # noqa: E402

BATCH = 32
REPO = Path(__file__).resolve().parents[1]
CONCEPTS = Path(__file__).resolve().parent / "demo_concepts.csv"
MIN_TAG_PHOTOS = 20
TAG_FORMS = {"wearing": "a person wearing a {}", "plain": "{}"}


def embed_files(encoder, paths: list[Path]) -> np.ndarray:
    size = getattr(encoder, "draft_size", None) or 256
    return np.concatenate([encoder.encode_images([starter.open_image(p, size - 32) for p in paths[i:i + BATCH]])
                           for i in range(0, len(paths), BATCH)])


def recall_at(scores: np.ndarray, positives: list[set[int]], ks=(1, 5, 10)) -> dict[str, float]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, : max(ks)]
    return {f"R@{k}": float(np.mean([bool(set(order[q, :k]) & positives[q]) for q in range(len(order))])) for k in ks}


def precision_at(scores: np.ndarray, labels: np.ndarray, query_labels: np.ndarray, k: int = 10) -> float:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = []
    for q in range(len(order)):
        got = order[q][np.isfinite(scores[q, order[q]])]
        hits.append(np.mean(labels[got] == query_labels[q]) if len(got) else 0.0)
    return float(np.mean(hits))


def tag_precision(scores: np.ndarray, has_tag: np.ndarray, k: int = 10) -> np.ndarray:
    """Per query (row): the share of its top k photos that carry its tag (has_tag: queries × photos)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(has_tag, order, axis=1).mean(axis=1)


def clothing_tags(rows: list[dict]) -> list[str]:
    counts = Counter(t for r in rows for t in set(r["tags"]))
    return sorted(t for t, n in counts.items() if n >= MIN_TAG_PHOTOS)


def read_concepts(path: Path = CONCEPTS) -> list[tuple[str, str]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return [(row["query"], row["photo"]) for row in csv.DictReader(lines)]


def evaluate(encoder, root: Path) -> dict[str, float]:
    res: dict[str, float] = {}
    # Flickr8k test: 5 captions per image, text→image.
    names, caps = data.flickr_test(root)
    zi = embed_files(encoder, [root / "flickr8k-1k" / "images" / n for n in names])
    texts, owner = [], []
    for k, n in enumerate(names):
        for c in caps[n]:
            texts.append(c)
            owner.append({k})
    zt = encoder.encode_texts(texts)
    res.update({f"flickr_t2i_{k}": v for k, v in recall_at(zt @ zi.T, owner).items()})

    # fashion test: product name → its own photo; subCategory precision; cate_id filter.
    trows = data.fashion_test(root)
    zi = embed_files(encoder, [root / "fashion-10k" / "images" / f"{r['id']}.jpg" for r in trows])
    zt = encoder.encode_texts([r["productDisplayName"] for r in trows])
    sub = np.array([r["subCategory"] for r in trows])
    s = zt @ zi.T
    own = [{i} for i in range(len(trows))]
    res.update({f"fashion_name2img_{k}": v for k, v in recall_at(s, own).items()})
    res["fashion_name2img_subcat_P@10"] = precision_at(s, sub, sub)
    filtered = np.where(sub[None, :] == sub[:, None], s, -np.inf)  # cate_id = subCategory filter
    res.update({f"fashion_name2img_filtered_{k}": v for k, v in recall_at(filtered, own).items()})
    ii = zi @ zi.T
    np.fill_diagonal(ii, -np.inf)  # image→image by class, the query photo excluded
    res["fashion_img2img_subcat_P@10"] = precision_at(ii, sub, sub)

    # clothing-parsing test: garments worn in street photos.
    crows = data.clothing_test(root)
    tags = clothing_tags(crows)
    zi = embed_files(encoder, [root / "clothing-parsing" / "images" / r["image"] for r in crows])
    has = np.array([[t in r["tags"] for r in crows] for t in tags], dtype=np.float64)
    per_form = {form: tag_precision(encoder.encode_texts([tmpl.format(t) for t in tags]) @ zi.T, has)
                for form, tmpl in TAG_FORMS.items()}
    for form, p in per_form.items():
        res[f"clothing_tag_P@10_{form}"] = float(p.mean())
    res["clothing_tag_P@10_base_rate"] = float(has.mean())  # what a random ranking would score
    for i, t in enumerate(tags):
        res[f"clothing_P@10 {t}"] = float(np.mean([p[i] for p in per_form.values()]))

    # imagenet-sample zero-shot (evaluation only).
    inet = data.imagenet_sample(root)
    labels = sorted({r["label"] for r in inet})
    lab_idx = {l: i for i, l in enumerate(labels)}
    zc = encoder.encode_texts([f"a photo of a {l}" for l in labels])
    zi = embed_files(encoder, [root / "imagenet-sample" / "images" / r["image"] for r in inet])
    order = np.argsort(-(zi @ zc.T), axis=1, kind="stable")[:, :5]
    truth = np.array([lab_idx[r["label"]] for r in inet])
    res["imagenet_zeroshot_top1"] = float(np.mean(order[:, 0] == truth))
    res["imagenet_zeroshot_top5"] = float(np.mean((order == truth[:, None]).any(1)))

    # the demo's photos and the fixed concept list
    gallery = demo.stored_gallery()
    keys, images = list(gallery), list(gallery.values())
    concepts = [(q, keys.index(photo)) for q, photo in read_concepts() if photo in keys]
    zi = encoder.encode_images(images)
    zt = encoder.encode_texts([q for q, _ in concepts])
    first = (zt @ zi.T).argmax(axis=1)
    res["demo_concepts_right_first"] = float(np.mean([f == want for f, (_, want) in zip(first, concepts)]))
    res["demo_concepts_n"] = len(concepts)
    return res


def baseline_heads(ref: str, variant: str, out_dir: Path) -> Path | None:
    """The starter heads file committed at a git ref, written to out_dir (None if absent)."""
    rel = starter.weights_path(variant).relative_to(REPO)
    try:
        blob = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:{rel.as_posix()}"], capture_output=True,
                              check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        print(f"note: no {rel} at git ref {ref!r}; no baseline for {variant}", file=sys.stderr)
        return None
    path = out_dir / f"{variant}@{ref.replace('/', '_')}.safetensors"
    path.write_bytes(blob)
    return path


def load_models(args, tmp: Path) -> list[tuple[str, object]]:
    models = []
    if args.model:
        from adapter.embed.registry import ModelRegistry  # the configured-model path

        reg = ModelRegistry.from_config(Path(args.registry) if args.registry else None)
        models += [(name, reg.get(name)) for name in args.model]
    variants = args.variant if args.variant else ([] if args.model else list(starter.VARIANTS))
    for v in variants:
        base = baseline_heads(args.baseline, v, tmp) if args.baseline != "none" else None
        if base is not None:
            models.append((f"{v}@{args.baseline}", starter.StarterEncoder(v, weights=base)))
        models.append((v, starter.StarterEncoder(v)))
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", choices=starter.VARIANTS, help="starter variant (default: both)")
    ap.add_argument("--baseline", default="main", help="git ref whose starter heads run beside (none: no baseline)")
    ap.add_argument("--model", action="append", help="a model name from the registry config")
    ap.add_argument("--registry", help="registry config path (default: the service's)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    root = data.require_datasets()
    results = {}
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        for name, enc in load_models(args, Path(tmp)):
            t0 = time.time()
            results[name] = evaluate(enc, root)
            results[name]["eval_seconds"] = round(time.time() - t0, 1)
            print(f"  {name}: {results[name]['eval_seconds']} s ({getattr(enc, 'runtime', 'n/a')})", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    keys = list(next(iter(results.values())))
    names = list(results)
    print(f"{'metric':42s}" + "".join(f"{n:>16s}" for n in names))
    for k in keys:
        print(f"{k:42s}" + "".join(f"{results[n][k]:>16.3f}" for n in names))


if __name__ == "__main__":
    main()
