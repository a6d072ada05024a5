"""vector_model name → encoder, from a YAML/TOML file and environment variables.

Config file (YAML or TOML; a top-level ``models`` table, or the table itself)::

    models:
      clip:      {kind: hf_clip, path: /models/clip-vit-base-patch32}
      clip_ecom: {kind: onnx_clip, path: /models/clip-onnx, device: cpu}
      other:     {kind: hf_clip, hub_id: openai/clip-vit-base-patch32}   # only then is a hub contacted

Environment (overrides the file):

- ``HA3_ADAPTER_MODELS=/path/models.yaml`` — the file, when ``from_config`` got no path.
- ``HA3_ADAPTER_MODEL_<NAME>=<value>`` — one model: a directory (kind detected from its
  files: ``*.onnx`` → onnx_clip, ``modules.json`` → st_clip, else hf_clip), or
  ``<kind>:<path-or-variant>`` (``starter:clip_ecom``, ``hf_clip:/dir``), or
  ``hub:<id>`` for a hub id.
- ``HA3_ADAPTER_DEVICE`` — default device (``auto``: CUDA when available, else CPU).

Defaults: ``clip`` and ``clip_ecom`` → the offline starter model variants of the same name.
Encoders load lazily on first ``get`` and are cached; loading is thread-safe and happens once.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from adapter.embed.base import Encoder
from adapter.errors import ConfigError, EmbedError

Kind = Literal["hf_clip", "st_clip", "onnx_clip", "starter"]
ENV_FILE = "HA3_ADAPTER_MODELS"
ENV_PREFIX = "HA3_ADAPTER_MODEL_"
ENV_DEVICE = "HA3_ADAPTER_DEVICE"


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Kind
    path: Path | None = None  # local directory (hf/st/onnx)
    hub_id: str | None = None  # hub id: only used when configured explicitly
    variant: str | None = None  # starter: "clip" | "clip_ecom"
    device: str = "auto"
    normalize: bool = True  # L2-normalise outputs (CLIP: yes)
    batch_size: int = 32
    image_size: int | None = None  # override the checkpoint's crop size

    @model_validator(mode="after")
    def _where(self) -> "ModelSpec":
        if self.kind == "starter":
            if not self.variant:
                object.__setattr__(self, "variant", self.name)
        elif self.path is None and self.hub_id is None:
            raise ValueError(f"model kind {self.kind} needs 'path' or 'hub_id'")
        if self.kind == "onnx_clip" and self.path is None:
            raise ValueError("model kind onnx_clip needs 'path' (a directory with image.onnx and text.onnx)")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        return self


DEFAULT_SPECS = {
    "clip": {"kind": "starter", "variant": "clip"},
    "clip_ecom": {"kind": "starter", "variant": "clip_ecom"},
}


class ModelRegistry:
    def __init__(self, specs: Mapping[str, ModelSpec], cache_dir: Path | None = None):
        self._specs = dict(specs)
        self._cache_dir = cache_dir  # where encoders may keep derived files (the starters' ONNX graphs)
        self._encoders: dict[str, Encoder] = {}
        self._locks = {name: threading.Lock() for name in self._specs}
        if not any(s.hub_id for s in self._specs.values()):
            # Offline is the normal case: make any accidental hub lookup fail fast.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    # -- construction --------------------------------------------------------------
    @classmethod
    def from_config(cls, path: str | Path | Mapping | None = None, env: Mapping[str, str] = os.environ,
                    data_dir: Path | None = None) -> "ModelRegistry":
        """Build from a YAML/TOML file (or an already-parsed dict), then env overrides.
        ``data_dir``: the service's own folder, where derived model files (the starters' ONNX
        graphs) are kept under ``model-cache/``; None: the user's cache (scripts)."""
        if path is None and env.get(ENV_FILE):
            path = env[ENV_FILE]
        raw: dict[str, Any] = {}
        if isinstance(path, Mapping):
            raw = dict(path)
        elif path is not None:
            raw = _read_file(Path(path))
        table = raw.get("models", raw) if isinstance(raw, dict) else None
        if not isinstance(table, dict):
            raise ConfigError("model config must be a mapping of model name → spec", location="$.models")

        entries: dict[str, dict] = {n: dict(v) for n, v in DEFAULT_SPECS.items()}
        for name, value in table.items():
            if not isinstance(value, dict):
                raise ConfigError(f"model '{name}' must be a mapping", location=f"$.models.{name}")
            entries[str(name)] = dict(value)
        for key, value in env.items():
            if key.startswith(ENV_PREFIX) and value:
                name = key[len(ENV_PREFIX):].lower()
                entries[name] = _spec_from_env(value)

        default_device = env.get(ENV_DEVICE) or "auto"
        specs = {}
        for name, entry in entries.items():
            entry.setdefault("device", default_device)
            entry["name"] = name
            if entry.get("path") is not None and "kind" not in entry:
                entry["kind"] = detect_kind(Path(entry["path"]))
            try:
                specs[name] = ModelSpec.model_validate(entry)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err.get("loc", ()))
                raise ConfigError(f"model '{name}': {err['msg']}",
                                  location=f"$.models.{name}" + (f".{where}" if where else "")) from None
        return cls(specs, Path(data_dir) / "model-cache" if data_dir else None)

    # -- use ----------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._specs)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise EmbedError(f"unknown vector model '{name}'; configured: {', '.join(self.names())}") from None

    def get(self, name: str) -> Encoder:
        enc = self._encoders.get(name)
        if enc is not None:
            return enc
        spec = self.spec(name)
        with self._locks[name]:
            enc = self._encoders.get(name)
            if enc is None:
                enc = _load(spec, self._cache_dir)
                self._encoders[name] = enc
        return enc

    def loaded(self) -> list[str]:
        return sorted(self._encoders)


def detect_kind(path: Path) -> str:
    if path.is_dir():
        if any(path.glob("*.onnx")):
            return "onnx_clip"
        if (path / "modules.json").exists():
            return "st_clip"
    return "hf_clip"


def _spec_from_env(value: str) -> dict:
    kind, sep, rest = value.partition(":")
    if sep and kind in ("hf_clip", "st_clip", "onnx_clip"):
        return {"kind": kind, "path": rest}
    if sep and kind == "starter":
        return {"kind": "starter", "variant": rest or None}
    if sep and kind in ("hub", "hf"):
        return {"kind": "hf_clip", "hub_id": rest}
    return {"path": value}


def _read_file(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"model config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text) or {}
    except Exception as exc:
        raise ConfigError(f"model config file {path} is not valid: {exc}") from None


def _load(spec: ModelSpec, cache_dir: Path | None = None) -> Encoder:
    if spec.kind == "hf_clip":
        from adapter.embed.clip_hf import HFClipEncoder

        return HFClipEncoder.load(spec)
    if spec.kind == "st_clip":
        from adapter.embed.clip_st import STClipEncoder

        return STClipEncoder.load(spec)
    if spec.kind == "onnx_clip":
        from adapter.embed.clip_onnx import OnnxClipEncoder

        return OnnxClipEncoder.load(spec)
    return _load_starter(spec, cache_dir)


def _load_starter(spec: ModelSpec, cache_dir: Path | None) -> Encoder:
    try:
        from adapter.embed.starter import StarterEncoder
    except ImportError as exc:
        raise EmbedError(
            f"model '{spec.name}': the offline starter model is not available ({exc}); "
            f"configure a CLIP checkpoint instead, e.g. {ENV_PREFIX}{spec.name.upper()}=/path/to/clip-dir"
        ) from None
    from adapter.embed.runtime import configure_torch_threads, pick_device

    configure_torch_threads()
    device = pick_device(spec.device)
    try:
        return StarterEncoder(spec.variant, device=device, cache_dir=cache_dir)
    except EmbedError:
        raise
    except Exception as exc:
        raise EmbedError(f"model '{spec.name}': starter variant '{spec.variant}' failed to load: {exc}") from None
