"""Choose an engine from configuration: ``embedded`` (default, no server) or ``opensearch``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from adapter.plan.engine import Engine
from adapter.errors import ConfigError


class TableShape(BaseModel):
    """One table's shards and replicas on OpenSearch (``engine.tables.<name>``)."""

    model_config = ConfigDict(extra="forbid")

    shards: int = Field(1, ge=1)
    replicas: int = Field(0, ge=0)


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["embedded", "opensearch"] = "embedded"
    data_dir: Path = Path("data")  # embedded: where catalog.sqlite and tables/ live
    url: str | None = None  # opensearch: e.g. http://localhost:9200 (several: comma separated)
    username: str | None = None
    password: SecretStr | None = None  # SecretStr: never printed, logged or dumped
    verify_certs: bool = True
    # opensearch: shards and replicas of new indexes (HA3 schemas carry none). The defaults fit
    # one node; `tables` sets them per table, e.g. {image_search: {shards: 3, replicas: 1}}.
    # Applied when a table is created and at every rebuild (each generation is a new index).
    shards: int = Field(1, ge=1)
    replicas: int = Field(0, ge=0)
    tables: dict[str, TableShape] = Field(default_factory=dict)
    refresh: bool = False  # opensearch: refresh after each write batch (tests, small demos)
    # opensearch: how long one request may keep retrying while nodes are down or busy, and how
    # long one try may wait for its answer (a bulk of large vectors on a busy node takes seconds)
    retry_deadline_s: float = Field(60.0, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    # opensearch: the k-NN library new indexes use. faiss needs the plugin's native code (a
    # full distribution has it); lucene is for a plugin without it; auto reads the nodes'
    # `knn_library` attribute (scripts/opensearch.sh sets it to lucene) and defaults to faiss.
    knn_library: Literal["auto", "faiss", "lucene"] = "auto"

    @model_validator(mode="after")
    def _needs_url(self) -> "EngineConfig":
        if self.kind == "opensearch" and not self.url:
            raise ValueError("engine kind 'opensearch' needs a url (e.g. http://localhost:9200)")
        return self


def open_engine(config: EngineConfig) -> Engine:
    if config.kind == "embedded":
        from adapter.engines.embedded import EmbeddedEngine

        return EmbeddedEngine(config.data_dir)
    try:
        from adapter.engines.opensearch import OpenSearchEngine
    except ImportError as exc:  # pragma: no cover - opensearch-py is a dependency
        raise ConfigError(f"the OpenSearch engine needs opensearch-py: {exc}") from exc
    return OpenSearchEngine(
        url=config.url,
        username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        verify_certs=config.verify_certs,
        shards=config.shards,
        replicas=config.replicas,
        table_shards={name: (t.shards, t.replicas) for name, t in config.tables.items()},
        refresh=config.refresh,
        retry_deadline_s=config.retry_deadline_s,
        request_timeout_s=config.request_timeout_s,
        knn_library=config.knn_library,
    )
