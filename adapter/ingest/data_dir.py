"""Pipelines kept in a service data directory, run from the command line as the service runs them.

``<data dir>/pipelines/<table>.json`` is where the admin page's Rebuild button (and the
reindex endpoint) finds a table's pipeline; ``ha3-adapter demo`` writes one there. Such a
file names only its source: the service supplies the table (the file's name), the schema the
table was created with (``<data dir>/schemas/<table>.json``) and its own engine. The CLI
does the same, for the embedded engine in that directory, so ``ha3-adapter rebuild
<data dir>/pipelines/<table>.json`` runs the very file the page runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapter.errors import ConfigError
from adapter.ingest.pipeline import PipelineConfig, read_pipeline_file

PIPELINES = "pipelines"
SCHEMAS = "schemas"
CATALOG = "catalog.sqlite"  # the embedded engine's; its presence marks a data directory


def data_dir_holding(pipeline_file: Path) -> Path | None:
    """The embedded data directory ``pipeline_file`` is stored in (``<dir>/pipelines/<name>``)."""
    folder = pipeline_file.resolve().parent
    if folder.name == PIPELINES and (folder.parent / CATALOG).is_file():
        return folder.parent
    return None


def load_pipeline(pipeline_file: Path, data_dir: Path | None = None) -> PipelineConfig:
    """The pipeline in ``pipeline_file``, completed as the service completes a stored one when
    it lives in a data directory or ``data_dir`` (``--data-dir``) is given: the table from
    the file's name, the table's stored schema, and that directory's embedded engine (the
    explicit ``data_dir`` replaces any engine section; a found one only fills a missing one)."""
    raw = read_pipeline_file(pipeline_file)
    home = data_dir.expanduser().resolve() if data_dir is not None else data_dir_holding(pipeline_file)
    if isinstance(raw, dict) and home is not None:
        raw = dict(raw)
        raw.setdefault("table", pipeline_file.stem)
        schema = home / SCHEMAS / f"{raw['table']}.json"
        if "schema" not in raw and schema.is_file():
            raw["schema"] = str(schema)
        if data_dir is not None or "engine" not in raw:
            raw["engine"] = {"kind": "embedded", "data_dir": str(home)}
    elif isinstance(raw, dict) and "engine" not in raw:
        raise ConfigError("the pipeline names no engine: give --data-dir DIR (the data directory "
                          "`ha3-adapter serve --data-dir` uses), or add an engine section "
                          "(kind: embedded with data_dir, or kind: opensearch with url)", "$.engine")
    return PipelineConfig.from_dict(raw, base_dir=pipeline_file.resolve().parent)
