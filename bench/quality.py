"""Retrieval quality of the vector models on the shared real-photo test splits.

    PYTHONPATH=. python bench/quality.py                       # both starter variants
    PYTHONPATH=. python bench/quality.py --model clip --registry models.yaml   # a configured model

Prints, per model: Flickr8k test text→image R@1/5/10; fashion test product-name→image
R@1/5/10 and subCategory precision@10, without and with a cate_id (= subCategory) filter;
imagenet-sample zero-shot top-1/top-5 from "a photo of a {label}"; fashion image→image
precision@10 by subCategory. Test splits come from splits.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapter.embed import starter  # noqa: E402
from adapter.embed.training import data  # noqa: E402

BATCH = 32


class ImageEmbedder:
    """Embeds image files with an encoder; starter variants share one backbone pass."""

    def __init__(self, cached: bool = False) -> None:
        self._backbone_memo: dict[tuple, tuple] = {}
        self._cached = cached

    def __call__(self, encoder, paths: list[Path]) -> np.ndarray:
        if isinstance(encoder, starter.StarterEncoder):
            return self._starter(encoder, paths)
        out = []
        for i in range(0, len(paths), BATCH):
            out.append(encoder.encode_images([starter.open_image(p) for p in paths[i:i + BATCH]]))
        return np.concatenate(out)

    def _starter(self, enc: "starter.StarterEncoder", paths: list[Path]) -> np.ndarray:
        import torch

        view = "crop" if enc.crop else "squash"
        key = (enc.backbone_name, view, tuple(enc.heads.taps), "|".join(map(str, paths)))
        if key not in self._backbone_memo and self._cached:
            self._backbone_memo[key] = _from_feature_cache(enc.backbone_name, view, enc.heads.taps, paths)
        if key not in self._backbone_memo:
            pooled, logits, colour = [], [], []
            for i in range(0, len(paths), BATCH):
                batch = torch.from_numpy(np.stack([enc.preprocess(starter.open_image(p, enc.image_size)) for p in paths[i:i + BATCH]]))
                p, l, tapped = starter.backbone_features(enc.backbone, batch, enc.heads.taps)
                pooled.append(starter.with_taps(p, tapped, enc.heads.taps))
                logits.append(l)
                colour.append(starter.colour_histogram(batch))
            self._backbone_memo[key] = (torch.cat(pooled), torch.cat(logits), torch.cat(colour))
        pooled, logits, colour = self._backbone_memo[key]
        if enc.heads.colour_bins:
            assert enc.heads.colour_bins == starter.COLOUR_BINS
        with torch.inference_mode():
            return enc.heads.image(pooled, logits, colour).numpy()


def _from_feature_cache(backbone: str, view: str, taps: list[str], paths: list[Path]) -> tuple:
    """Backbone outputs from the training feature cache (same open_image/preprocess code)."""
    import torch

    from adapter.embed.training.features import backbone_inputs, colour_histograms, load_images

    set_name = {"flickr8k-1k": "flickr", "fashion-10k": "fashion", "imagenet-sample": "imagenet"}[paths[0].parent.parent.name]
    z = load_images(backbone, set_name, view)
    stem = (lambda p: p.stem) if set_name == "fashion" else (lambda p: p.name)
    where = {k: i for i, k in enumerate(z["keys"].tolist())}
    idx = [where[stem(p)] for p in paths]
    colour = colour_histograms(z, starter.COLOUR_BINS)[idx]
    return (torch.from_numpy(backbone_inputs(z, taps)[idx]), torch.from_numpy(z["logits"][idx]),
            torch.from_numpy(colour))


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


def evaluate(encoder, embed: ImageEmbedder, root: Path) -> dict[str, float]:
    res: dict[str, float] = {}
    # Flickr8k test: 5 captions per image, text→image.
    names, caps, test = data.flickr(root)
    test_names = [n for n in names if n in test]
    zi = embed(encoder, [root / "flickr8k-1k" / "images" / n for n in test_names])
    texts, owner = [], []
    for k, n in enumerate(test_names):
        for c in caps[n]:
            texts.append(c)
            owner.append({k})
    zt = encoder.encode_texts(texts)
    res.update({f"flickr_t2i_{k}": v for k, v in recall_at(zt @ zi.T, owner).items()})

    # fashion test: product name → its own photo; subCategory precision; cate_id filter.
    rows, ftest = data.fashion(root)
    trows = [r for r in rows if r["id"] in ftest]
    zi = embed(encoder, [root / "fashion-10k" / "images" / f"{r['id']}.jpg" for r in trows])
    zt = encoder.encode_texts([r["productDisplayName"] for r in trows])
    sub = np.array([r["subCategory"] for r in trows])
    s = zt @ zi.T
    own = [{i} for i in range(len(trows))]
    res.update({f"fashion_name2img_{k}": v for k, v in recall_at(s, own).items()})
    res["fashion_name2img_subcat_P@10"] = precision_at(s, sub, sub)
    filtered = np.where(sub[None, :] == sub[:, None], s, -np.inf)  # cate_id = subCategory filter
    res.update({f"fashion_name2img_filtered_{k}": v for k, v in recall_at(filtered, own).items()})
    res["fashion_name2img_filtered_subcat_P@10"] = precision_at(filtered, sub, sub)
    # image→image by class (query photo excluded from its own results)
    ii = zi @ zi.T
    np.fill_diagonal(ii, -np.inf)
    res["fashion_img2img_subcat_P@10"] = precision_at(ii, sub, sub)

    # imagenet-sample zero-shot (evaluation only).
    inet = data.imagenet_sample(root)
    labels = sorted({r["label"] for r in inet})
    lab_idx = {l: i for i, l in enumerate(labels)}
    zc = encoder.encode_texts([f"a photo of a {l}" for l in labels])
    zi = embed(encoder, [root / "imagenet-sample" / "images" / r["image"] for r in inet])
    order = np.argsort(-(zi @ zc.T), axis=1, kind="stable")[:, :5]
    truth = np.array([lab_idx[r["label"]] for r in inet])
    res["imagenet_zeroshot_top1"] = float(np.mean(order[:, 0] == truth))
    res["imagenet_zeroshot_top5"] = float(np.mean((order == truth[:, None]).any(1)))
    return res


def load_models(args) -> list[tuple[str, object]]:
    models = []
    if args.model:
        from adapter.embed.registry import ModelRegistry  # the configured-model path

        reg = ModelRegistry.from_config(Path(args.registry) if args.registry else None)
        models += [(name, reg.get(name)) for name in args.model]
    variants = args.variant if args.variant else ([] if args.model else list(starter.VARIANTS))
    models += [(f"starter:{v}", starter.StarterEncoder(v)) for v in variants]
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", choices=starter.VARIANTS, help="starter variant (default: both)")
    ap.add_argument("--model", action="append", help="a model name from the registry config")
    ap.add_argument("--registry", help="registry config path (default: the service's)")
    ap.add_argument("--cached-features", action="store_true",
                    help="starter variants: reuse backbone outputs cached by adapter.embed.training.features")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    root = data.require_datasets()
    embed = ImageEmbedder(cached=args.cached_features)
    results = {}
    for name, enc in load_models(args):
        t0 = time.time()
        results[name] = evaluate(enc, embed, root)
        results[name]["eval_seconds"] = round(time.time() - t0, 1)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    keys = list(next(iter(results.values())))
    names = list(results)
    print(f"{'metric':42s}" + "".join(f"{n:>20s}" for n in names))
    for k in keys:
        print(f"{k:42s}" + "".join(f"{results[n][k]:>20.3f}" for n in names))


if __name__ == "__main__":
    main()
