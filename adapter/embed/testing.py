"""A tiny, randomly initialised CLIP saved in the standard Hugging Face layout.

Tests (ours and other helpers') load it through exactly the code path real checkpoints
use: ``CLIPModel.from_pretrained`` + ``CLIPTokenizer`` + ``preprocessor_config.json``.
Nothing touches a model hub: the byte-level BPE vocabulary and merges are written here.

    path = make_tiny_clip(tmp_path / "clip")          # ~1 MB, < 1 s
    registry = ModelRegistry.from_config(tiny_clip_registry_config(path))
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

# A handful of merges so the BPE actually merges something (same code path as real CLIP).
_MERGES = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("o", "n"), ("i", "n"), ("e", "r"),
           ("a", "r"), ("r", "e"), ("d", "o"), ("c", "a"), ("o", "g</w>"), ("a", "t</w>")]


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> tuple[str, ...]:
    # GPT-2/CLIP byte → printable unicode table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return tuple(chr(c) for c in cs)


def _write_tokenizer(path: Path) -> dict[str, int]:
    chars = list(_bytes_to_unicode())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m).replace("</w>", "") + ("</w>" if m[1].endswith("</w>") else "") for m in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]  # last, like real CLIP (argmax-eos pooling)
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in _MERGES) + "\n")
    return vocab


def make_tiny_clip(path: str | Path, dim: int = 512, *, image_size: int = 32, seed: int = 0,
                   vision: dict | None = None, text: dict | None = None) -> Path:
    """Save a tiny random CLIPModel + tokenizer + image processor config at ``path``.

    ``vision``/``text`` override tower sizes (the benchmark uses ViT-B/32 sizes to get
    real-CLIP compute cost without real weights).
    """
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = _write_tokenizer(path)
    vocab_size = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=list(_MERGES))
    tok.save_pretrained(path)
    bos, eos = tok.convert_tokens_to_ids("<|startoftext|>"), tok.convert_tokens_to_ids("<|endoftext|>")

    config = CLIPConfig(
        text_config=dict(dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                              bos_token_id=bos, eos_token_id=eos, pad_token_id=eos), **(text or {})),
        vision_config=dict(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, image_size=image_size, patch_size=8), **(vision or {})),
        projection_dim=dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "CLIPProcessor",
        "do_resize": True, "size": {"shortest_edge": image_size}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": True,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return path


def tiny_clip_registry_config(path: str | Path, names: tuple[str, ...] = ("clip", "clip_ecom")) -> dict:
    """A registry config mapping each vector_model name to the tiny CLIP at ``path`` (kind hf_clip)."""
    return {"models": {n: {"kind": "hf_clip", "path": str(path), "device": "cpu"} for n in names}}
