"""EngineConfig / open_engine: the configured engine, and configuration mistakes caught early."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adapter.plan.engine import Engine
from adapter.engines.embedded import EmbeddedEngine
from adapter.engines.factory import EngineConfig, open_engine
from adapter.engines.opensearch import OpenSearchEngine


def test_embedded_is_the_default_and_satisfies_the_protocol(tmp_path):
    engine = open_engine(EngineConfig(data_dir=tmp_path / "d"))
    try:
        assert isinstance(engine, EmbeddedEngine) and isinstance(engine, Engine)
        assert (tmp_path / "d" / "catalog.sqlite").exists()
    finally:
        engine.close()


def test_opensearch_needs_a_url_and_keeps_the_password_secret():
    with pytest.raises(ValidationError, match="needs a url"):
        EngineConfig(kind="opensearch")
    config = EngineConfig(kind="opensearch", url="http://localhost:9200", username="admin", password="pa55word")
    assert "pa55word" not in repr(config) and "pa55word" not in config.model_dump_json()
    engine = open_engine(config)  # no request is made until the engine is used
    assert isinstance(engine, OpenSearchEngine) and isinstance(engine, Engine)
    engine.close()


def test_unknown_settings_are_rejected():
    with pytest.raises(ValidationError):
        EngineConfig(kind="embedded", data_dri="typo")
