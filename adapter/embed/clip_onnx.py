"""ONNX CLIP pairs run with onnxruntime (optional extra ``onnx``: ``pip install .[onnx]``).

Directory layout (what :func:`export_onnx_clip` writes from a Hugging Face CLIP dir)::

    image.onnx   pixel_values (n,3,H,W) float32            → image_embeds (n,d)
    text.onnx    input_ids, attention_mask (n,L) int64      → text_embeds (n,d)
    tokenizer files (tokenizer.json / vocab.json + merges.txt), preprocessor_config.json

Input names are read from the sessions, so pairs exported by other tools with a single
``input_ids`` text input also load. Outputs are the projected (pre-normalisation) embeddings;
we L2-normalise when the spec says ``normalize`` (default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from adapter.embed.preprocess import ClipPreprocess
from adapter.embed.runtime import l2_normalize, ort_session_options
from adapter.errors import EmbedError

IMAGE_FILE, TEXT_FILE = "image.onnx", "text.onnx"


class OnnxClipEncoder:
    def __init__(self, name: str, image_session, text_session, tokenizer, preprocess: ClipPreprocess, *,
                 normalize: bool = True, batch_size: int = 32, max_text_length: int = 77):
        self.name = name
        self.normalized = normalize
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.draft_size = preprocess.size
        self.tokenizer = tokenizer
        self.max_text_length = max_text_length
        self._image, self._text = image_session, text_session
        self._image_input = image_session.get_inputs()[0].name
        self._text_inputs = [i.name for i in text_session.get_inputs()]
        self.dimension = int(image_session.get_outputs()[0].shape[-1])

    @classmethod
    def load(cls, spec) -> "OnnxClipEncoder":
        try:
            import onnxruntime as ort
        except ImportError:
            raise EmbedError(f"model '{spec.name}': kind onnx_clip needs onnxruntime (pip install 'ha3-opensearch-adapter[onnx]')") from None
        from transformers import CLIPTokenizer

        d = Path(spec.path)
        missing = [f for f in (IMAGE_FILE, TEXT_FILE) if not (d / f).exists()]
        if missing:
            raise EmbedError(f"model '{spec.name}': ONNX directory {d} lacks {', '.join(missing)}")
        opts = ort_session_options()
        providers = ["CPUExecutionProvider"]
        if spec.device in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            image = ort.InferenceSession(str(d / IMAGE_FILE), opts, providers=providers)
            text = ort.InferenceSession(str(d / TEXT_FILE), opts, providers=providers)
            tokenizer = CLIPTokenizer.from_pretrained(str(d), local_files_only=True)
        except Exception as exc:
            raise EmbedError(f"model '{spec.name}': cannot load ONNX CLIP from {d}: {exc}") from None
        preprocess = ClipPreprocess.from_hf_config(d) if any(
            (d / f).exists() for f in ("preprocessor_config.json", "processor_config.json")) else ClipPreprocess()
        if spec.image_size:
            preprocess = ClipPreprocess(size=spec.image_size, crop=spec.image_size, mean=preprocess.mean,
                                        std=preprocess.std, resample=preprocess.resample)
        return cls(spec.name, image, text, tokenizer, preprocess, normalize=spec.normalize, batch_size=spec.batch_size)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(self.preprocess.batch(list(images)))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        out = [self._image.run(None, {self._image_input: np.ascontiguousarray(pixels[i:i + self.batch_size], dtype=np.float32)})[0]
               for i in range(0, len(pixels), self.batch_size)]
        return self._finish(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_text_length, return_tensors="np")
            feeds = {n: tok[n].astype(np.int64) for n in self._text_inputs if n in tok}
            out.append(self._text.run(None, feeds)[0])
        return self._finish(out)

    def _finish(self, parts) -> np.ndarray:
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        x = np.concatenate(parts).astype(np.float32, copy=False)
        return l2_normalize(x) if self.normalized else x


def export_onnx_clip(hf_dir: str | Path, out_dir: str | Path, *, opset: int = 17) -> Path:
    """Export a Hugging Face CLIP directory to an ``image.onnx`` + ``text.onnx`` pair."""
    import shutil
    import warnings

    import torch
    from transformers import CLIPModel

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = CLIPModel.from_pretrained(str(hf_dir), local_files_only=True, attn_implementation="eager").eval()

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, pixel_values):
            return self.m.visual_projection(self.m.vision_model(pixel_values=pixel_values).pooler_output)

    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            out = self.m.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            return self.m.text_projection(out)

    size = model.config.vision_config.image_size
    pixels = torch.zeros(2, 3, size, size)
    ids = torch.ones(2, 7, dtype=torch.long)
    ids[:, -1] = model.config.text_config.eos_token_id
    mask = torch.ones(2, 7, dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about shape checks frozen as constants
        torch.onnx.export(ImageTower(), (pixels,), str(out_dir / IMAGE_FILE), input_names=["pixel_values"],
                          output_names=["image_embeds"], dynamic_axes={"pixel_values": {0: "n"}, "image_embeds": {0: "n"}},
                          opset_version=opset, dynamo=False)
        torch.onnx.export(TextTower(), (ids, mask), str(out_dir / TEXT_FILE), input_names=["input_ids", "attention_mask"],
                          output_names=["text_embeds"],
                          dynamic_axes={"input_ids": {0: "n", 1: "len"}, "attention_mask": {0: "n", 1: "len"},
                                        "text_embeds": {0: "n"}},
                          opset_version=opset, dynamo=False)
    for f in hf_dir.iterdir():
        if f.suffix in (".json", ".txt") and f.name not in ("config.json",):
            shutil.copy(f, out_dir / f.name)
    return out_dir
