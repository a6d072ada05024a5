"""The pipelines an HTTP reindex may run: named files the operator keeps on the server.

``POST .../tables/{table}/reindex`` takes ``{"pipeline": "<name>"}`` (default: the table's
own name) and runs ``<data dir>/pipelines/<name>.json`` (or ``.yaml``/``.yml``). It does not
take a pipeline definition in the request: a pipeline names files, SQL databases, buckets,
endpoints and keys on the server's side, and a client with write access is a data writer,
not the host's operator. Checking every such field of a client-sent definition would make
each new pipeline option a new way out of the sandbox; a name leaves all of them to the
person who can already write files on the host.

Even a named pipeline runs confined (adapter.sources.access): its schema, table files and
SQLite databases inside the data directory or ``access.source_roots``, its buckets inside
the data directory or ``access.bucket_roots`` or on the endpoint allow-list, stored keys
only for their own endpoint and bucket. Checkpoint, report and journal always live in
``<data dir>/ingest``; the engine and models are the service's own.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from adapter.errors import ConfigError, NotFoundError, QueryError
from adapter.ingest.pipeline import PipelineConfig
from adapter.sources.access import AccessRules

if TYPE_CHECKING:  # the runtime imports this module's ingest_dir when it opens
    from adapter.runtime import Runtime

PIPELINE_DIR = "pipelines"
INGEST_DIR = "ingest"  # checkpoints, reports and journals of the service's rebuilds
SUFFIXES = (".json", ".yaml", ".yml")
# Keys that choose where the service writes or what it runs with: always the service's own.
SERVER_OWNED = ("checkpoint_dir", "report", "engine", "models_config")


def ingest_dir(state_dir: Path) -> Path:
    return Path(state_dir) / INGEST_DIR


def pipeline_file(state_dir: Path, name: str) -> Path | None:
    """``<state dir>/pipelines/<name>.json|yaml|yml``, or None."""
    from adapter.runtime import TABLE_NAME

    if not TABLE_NAME.fullmatch(name):
        return None
    for suffix in SUFFIXES:
        path = Path(state_dir) / PIPELINE_DIR / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def requested_name(table: str, body: dict[str, Any]) -> str:
    """The pipeline name a reindex request asks for (the table's own name by default)."""
    name = body.get("pipeline", table)
    if isinstance(name, dict):
        raise QueryError("reindex takes the name of a pipeline stored on the server "
                         f"(<data dir>/{PIPELINE_DIR}/<name>.json), not a pipeline definition: a definition "
                         "names files, databases and endpoints on the server's side", "$.pipeline")
    if not isinstance(name, str) or not name:
        raise QueryError("'pipeline' must be the name of a stored pipeline", "$.pipeline")
    return name


def load_service_pipeline(runtime: Runtime, table: str, name: str) -> PipelineConfig:
    """The named pipeline, for ``table``, with the service's own locations, checked against
    the service's access rules. 404 for an unknown name, 400/403 for what it may not do."""
    state = Path(runtime.settings.state_dir)
    path = pipeline_file(state, name)
    if path is None:
        raise NotFoundError(f"no stored pipeline named {name!r} (put one at <data dir>/{PIPELINE_DIR}/"
                            f"{name}.json)", "$.pipeline")
    raw = _read(path)
    for key in SERVER_OWNED:
        if key in raw:
            raise ConfigError(f"pipeline {name!r} sets {key!r}: a reindex run by the service uses its own "
                              "engine, models and ingest folder; remove it", f"$.{key}")
    raw = {**raw, "table": table, "checkpoint_dir": str(ingest_dir(state))}
    if "schema" not in raw:
        stored = state / "schemas" / f"{table}.json"
        if not stored.exists():
            raise QueryError(f"no stored schema for table '{table}': give the pipeline a schema", "$.schema")
        raw["schema"] = str(stored)
    pipeline = PipelineConfig.from_dict(raw, base_dir=state)
    confine(pipeline, runtime.access)
    return pipeline


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        # The operator's file: say which and why, never quote it.
        raise ConfigError(f"stored pipeline {path.name} cannot be read ({type(exc).__name__})", "$.pipeline") from None
    if not isinstance(data, dict):
        raise ConfigError(f"stored pipeline {path.name} must hold a mapping", "$.pipeline")
    return data


def confine(pipeline: PipelineConfig, rules: AccessRules) -> None:
    """AccessError unless every file the pipeline reads lies where the operator allows.
    (Buckets, endpoints and keys are checked when the rebuild opens its image store.)"""
    rules.source_path(pipeline.schema_file, "$.schema")
    table = pipeline.source.table
    if table is None:
        return
    if table.path is not None:
        from adapter.sources.tables import table_files

        pattern = Path(table.path) if Path(table.path).is_absolute() else Path(table.base_dir or ".") / table.path
        fixed = pattern.parts[:_first_magic(pattern)]  # the folder a glob starts from
        rules.source_path(Path(*fixed) if fixed else Path("."), "$.source.table.path")
        for file in table_files(table):  # every match, symlinks resolved
            rules.source_path(file, "$.source.table.path")
    elif table.sql is not None:
        database = _sqlite_file(table.sql.url)
        if database is not None:
            rules.source_path(database, "$.source.table.sql.url")


def _first_magic(path: Path) -> int:
    return next((i for i, part in enumerate(path.parts) if glob.has_magic(part)), len(path.parts))


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (relative to the working directory, as SQLite
    opens it); None for other databases and in-memory SQLite."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("source.table.sql.url is not a database URL", "$.source.table.sql.url") from None
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return Path(database[5:].split("?", 1)[0]) if database.startswith("file:") else None
    return Path(database)
