"""Open the configured engine. (Interim copy of the agreed API until the engines branch's
factory lands; on merge, the engines branch's version wins.)"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from adapter.errors import ConfigError


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["embedded", "opensearch"] = "embedded"
    data_dir: Path = Path("./data")
    url: str | None = None
    username: str | None = None
    password: str | None = None
    verify_certs: bool = True


def open_engine(config: EngineConfig):
    if config.kind == "embedded":
        from adapter.engines.embedded import EmbeddedEngine

        return EmbeddedEngine(config.data_dir)
    try:
        from adapter.engines.opensearch import OpenSearchEngine
    except ImportError:
        raise ConfigError("the OpenSearch engine is not available in this build", "$.engine.kind") from None
    if not config.url:
        raise ConfigError("engine.url is required for the opensearch engine", "$.engine.url")
    return OpenSearchEngine(url=config.url, username=config.username, password=config.password,
                            verify_certs=config.verify_certs)
