"""Pipeline files (YAML in ``pipelines/``): what a rebuild reads and where it writes.

```yaml
table: image_search_oss
schema: ../mappings/image_search_oss.json     # HA3 schema JSON; relative to this file
source:
  table: {path: data/items.csv}                # or {sql: {url: ..., query: ...}}, globs, partition
  image:
    kind: object_store                         # auto | object_store | base64 | vector
    object_store: {endpoint: http://127.0.0.1:9000, bucket: images, addressing_style: path}
engine: {kind: embedded, data_dir: ../.ha3-adapter/data}
```

``${VAR}`` anywhere in a string value is replaced from the environment when the file is
loaded (``access_key_secret: ${OSS_SECRET}``), so secrets need not sit in the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from adapter.errors import ConfigError
from adapter.schema import TableSpec, load_schema_file
from adapter.sources.objectstore import ObjectStoreConfig
from adapter.sources.tables import TableSourceConfig

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ImageSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # auto: object store when the schema's source field is an oss field and a store is
    # configured, Base64 otherwise; a non-empty vector column always wins (ready vectors).
    kind: Literal["auto", "object_store", "base64", "vector"] = "auto"
    object_store: ObjectStoreConfig | None = None


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: TableSourceConfig | None = None  # None: an API-push-only pipeline
    image: ImageSourceConfig = Field(default_factory=ImageSourceConfig)


class EngineSection(BaseModel):
    """Mirrors ``adapter.engines.factory.EngineConfig``; converted when opening the engine."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["embedded", "opensearch"] = "embedded"
    data_dir: Path = Path(".ha3-adapter/data")
    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True


class PushSection(BaseModel):
    """Documentation of the push endpoint for API-fed tables (api_push.yaml)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = "POST /update/{table}/actions/bulk"
    pk_field: str | None = None  # X-Opensearch-Swift-PK-Field
    max_documents: int = 1000


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    table: str
    schema_file: Path = Field(alias="schema")
    source: SourceConfig = Field(default_factory=SourceConfig)
    engine: EngineSection | None = None
    models_config: Path | None = None  # model registry config (default: the service's)
    models: dict[str, str] = Field(default_factory=dict)  # schema vector_model → registry name
    model: str | None = None  # force one registry model for this table
    batch_size: int = Field(128, ge=1)  # records per fetch/embed/write step
    embed_batch_size: int = Field(128, ge=1)  # images per EmbeddingService call (it sub-batches per model)
    concurrency: int = Field(8, ge=1)  # fetch+decode threads
    queue_depth: int = Field(4, ge=1)  # batches in flight between stages (bounds memory)
    train_sample_max: int = Field(50_000, ge=1)  # cap on Qc training vectors held in memory
    train_seed: int = 0
    checkpoint_dir: Path | None = None
    report: Path | None = None  # JSONL of failures; default next to the checkpoint
    push: PushSection | None = None
    base_dir: Path = Field(default=Path("."), exclude=True)

    # -- loading ------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineConfig":
        path = Path(path)
        return cls.from_dict(read_pipeline_file(path), base_dir=path.resolve().parent)

    @classmethod
    def from_dict(cls, data: Any, base_dir: Path | None = None) -> "PipelineConfig":
        if not isinstance(data, dict):
            raise ConfigError("a pipeline must be a mapping with table, schema and source", "$")
        try:
            config = cls.model_validate(_expand_env(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "$." + ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"invalid pipeline: {first['msg']}", where) from None
        except ConfigError:
            raise
        return config.resolved(base_dir or Path.cwd())

    def resolved(self, base_dir: Path) -> "PipelineConfig":
        """Relative paths are relative to the pipeline file's folder."""

        def rel(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base_dir / p))

        updates: dict[str, Any] = {"base_dir": base_dir, "schema_file": rel(self.schema_file),
                                   "models_config": rel(self.models_config), "report": rel(self.report),
                                   "checkpoint_dir": rel(self.checkpoint_dir)}
        if self.engine is not None:
            updates["engine"] = self.engine.model_copy(update={"data_dir": rel(self.engine.data_dir)})
        if self.source.table is not None:
            table = self.source.table.model_copy(update={"base_dir": base_dir})
            updates["source"] = self.source.model_copy(update={"table": table})
        if self.source.image.object_store and (self.source.image.object_store.url or "").startswith("file://"):
            url = self.source.image.object_store.url
            local = Path(url[len("file://"):])
            if not local.is_absolute():
                store = self.source.image.object_store.model_copy(update={"url": f"file://{base_dir / local}"})
                image = self.source.image.model_copy(update={"object_store": store})
                updates["source"] = updates.get("source", self.source).model_copy(update={"image": image})
        return self.model_copy(update=updates)

    # -- derived ------------------------------------------------------------------------

    def load_spec(self) -> TableSpec:
        return load_schema_file(self.schema_file, self.table)

    def state_dir(self) -> Path:
        if self.checkpoint_dir is not None:
            return self.checkpoint_dir
        data_dir = self.engine.data_dir if self.engine else self.base_dir / ".ha3-adapter" / "data"
        return Path(data_dir) / "ingest"

    def checkpoint_path(self) -> Path:
        return self.state_dir() / f"{self.table}.checkpoint.json"

    def report_path(self) -> Path:
        return self.report or self.state_dir() / f"{self.table}.report.jsonl"

    def journal_path(self) -> Path:
        return self.state_dir() / f"{self.table}.journal.jsonl"

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed: the same table, schema and rows."""
        source = self.source.table.model_dump(mode="json", exclude={"base_dir"}) if self.source.table else None
        try:
            schema_text = self.schema_file.read_text(encoding="utf-8")
        except OSError:
            schema_text = ""
        blob = json.dumps({"table": self.table, "schema": schema_text, "source": source,
                           "model": self.model, "models": self.models}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_pipeline_file(path: Path) -> Any:
    """The YAML (or JSON, a subset of YAML) in a pipeline file, not yet validated."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline file: {exc.strerror}", str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", where) from None


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):
        def sub(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set", f"${{{name}}}")
        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value
