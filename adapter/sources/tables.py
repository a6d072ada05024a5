"""Business tables: the rows a rebuild indexes.

The seed keeps its table in MaxCompute; self-hosted, the same table is a CSV/TSV, JSONL or
Parquet file (or a glob of them: one file per partition), or any SQL database reachable by
a SQLAlchemy URL with a query. ``read_table`` yields ``Row(offset, data)``: ``offset`` is
the row's position in the whole (filtered) source, stable between runs, which is what the
rebuild checkpoint records.

Partitions work like the seed's partition key: ``partition: {column: ds, value: "20250331"}``
keeps matching rows only (for SQL it becomes a bound WHERE on the query), and a file glob
(``path: data/ds=*/items.parquet``) reads the matching files in sorted order.

``coerce_record`` maps a raw row onto a TableSpec: column → field (with an optional rename
map ``{field: column}``), each value coerced to its FieldType; errors are per record.

MaxCompute: ``format: maxcompute`` reads through pyodps when it is installed. It is an
optional extra that is NOT tested here (no MaxCompute on our machines).
"""

from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapter.errors import ConfigError, SourceError
from adapter.schema.model import TableSpec
from adapter.values import source_value

# HA3's multi-value separator inside one string value (the push API and HA3 docs use ^]).



class PartitionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str
    value: Any = None
    values: list[Any] | None = None  # any of these

    def accepts(self, row: dict) -> bool:
        wanted = self.values if self.values is not None else [self.value]
        return str(row.get(self.column)) in {str(v) for v in wanted}


class SqlSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str  # any SQLAlchemy URL: sqlite:///items.db, postgresql+psycopg://..., mysql+pymysql://...
    query: str  # SELECT ...; a partition filter wraps it as a subquery
    chunk_size: int = 1000


class MaxComputeSource(BaseModel):
    """Optional, untested here: pyodps reader for the seed's own MaxCompute tables."""

    model_config = ConfigDict(extra="forbid")

    project: str
    table: str
    endpoint: str
    access_id_env: str = "ODPS_ACCESS_ID"
    secret_access_key_env: str = "ODPS_SECRET_ACCESS_KEY"


class TableSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None  # a file, or a glob (one file per partition)
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    sql: SqlSource | None = None
    maxcompute: MaxComputeSource | None = None
    partition: PartitionSpec | None = None
    columns: dict[str, str] = Field(default_factory=dict)  # field name → column name
    base_dir: Path | None = None  # relative paths resolve here (the pipeline file's folder)

    def model_post_init(self, __context: Any) -> None:
        given = [x for x in (self.path, self.sql, self.maxcompute) if x]
        if len(given) != 1:
            raise ConfigError("a table source needs exactly one of path, sql or maxcompute", "source.table")


@dataclass
class Row:
    offset: int  # position in the (filtered) source: stable between runs
    data: dict[str, Any]


def read_table(config: TableSourceConfig, *, start: int = 0) -> Iterator[Row]:
    """Rows from the source in a stable order, starting at ``offset >= start``."""
    offset = 0
    for data in _raw_rows(config):
        if config.partition and config.sql is None and not config.partition.accepts(data):
            continue
        if offset >= start:
            yield Row(offset, data)
        offset += 1


def count_rows(config: TableSourceConfig) -> int:
    if config.sql is not None and config.partition is None:
        from sqlalchemy import text

        engine = _sql_engine(config.sql)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(f"SELECT COUNT(*) FROM ({config.sql.query}) AS src")).scalar_one())
        except Exception as exc:  # noqa: BLE001 - any driver error becomes a SourceError
            raise SourceError(f"cannot count rows: {type(exc).__name__}: {_first_line(exc)}", "source.table.sql") from None
        finally:
            engine.dispose()
    return sum(1 for _ in read_table(config))


def table_files(config: TableSourceConfig) -> list[Path]:
    assert config.path is not None
    pattern = config.path
    if config.base_dir is not None and not Path(pattern).is_absolute():
        pattern = str(config.base_dir / pattern)
    if glob.has_magic(pattern):
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not files:
            raise SourceError(f"no table files match {config.path!r}", "source.table.path")
        return files
    path = Path(pattern)
    if not path.is_file():
        raise SourceError(f"table file not found: {config.path}", "source.table.path")
    return [path]


def table_signature(config: TableSourceConfig) -> tuple:
    """What changes when the table's files (or the set of partition files) change.

    Files only: a SQL or MaxCompute source has no cheap change signal here (re-run the
    rebuild from a scheduler instead)."""
    if config.path is None:
        raise ConfigError("automatic reindexing watches table files; this source is SQL/MaxCompute",
                          "source.table")
    try:
        files = table_files(config)
    except SourceError:
        return ()
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


def _raw_rows(config: TableSourceConfig) -> Iterator[dict[str, Any]]:
    if config.sql is not None:
        yield from _sql_rows(config)
    elif config.maxcompute is not None:
        yield from _maxcompute_rows(config.maxcompute, config.partition)
    else:
        for path in table_files(config):
            yield from _file_rows(path, config.format)


def _file_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffixes = "".join(path.suffixes).lower()
    for ext, fmt in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"),
                     (".tsv", "tsv"), (".csv", "csv")):
        if suffixes.endswith(ext) or path.suffix.lower() == ext:
            return fmt
    raise SourceError(f"cannot tell the format of {path.name}: set source.table.format", "source.table.format")


def _file_rows(path: Path, declared: str) -> Iterator[dict[str, Any]]:
    fmt = _file_format(path, declared)
    try:
        if fmt in ("csv", "tsv"):
            with path.open(newline="", encoding="utf-8-sig") as handle:
                yield from csv.DictReader(handle, delimiter="\t" if fmt == "tsv" else ",")
        elif fmt == "jsonl":
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        value = json.loads(line)
                    except json.JSONDecodeError as exc:
                        # A broken line is a bad record, not a broken table: it is reported.
                        yield {"__error__": f"invalid JSON on line {number}: {exc.msg}"}
                        continue
                    yield value if isinstance(value, dict) else {"__error__": f"line {number} is not an object"}
        else:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=2048):
                yield from batch.to_pylist()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read table file {path.name}: {exc}", "source.table.path") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow errors
        if type(exc).__module__.startswith("pyarrow"):
            raise SourceError(f"cannot read parquet file {path.name}: {_first_line(exc)}", "source.table.path") from None
        raise


def _sql_engine(sql: SqlSource):
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        return create_engine(sql.url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        # The URL may hold a password: name only the dialect part.
        dialect = sql.url.split(":", 1)[0]
        raise SourceError(f"cannot open SQL source '{dialect}:...': {_first_line(exc)}", "source.table.sql.url") from None


def _sql_rows(config: TableSourceConfig) -> Iterator[dict[str, Any]]:
    from sqlalchemy import bindparam, text
    from sqlalchemy.exc import SQLAlchemyError

    assert config.sql is not None
    engine = _sql_engine(config.sql)
    query, params = config.sql.query, {}
    if config.partition is not None:
        column = config.partition.column.replace('"', '""')
        wanted = config.partition.values if config.partition.values is not None else [config.partition.value]
        query = f'SELECT * FROM ({config.sql.query}) AS src WHERE "{column}" IN :partition_values'
        statement = text(query).bindparams(bindparam("partition_values", expanding=True))
        params = {"partition_values": list(wanted)}
    else:
        statement = text(query)
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(statement, params)
            keys = list(result.keys())
            while True:
                chunk = result.fetchmany(config.sql.chunk_size)
                if not chunk:
                    break
                for values in chunk:
                    yield dict(zip(keys, values))
    except SQLAlchemyError as exc:
        raise SourceError(f"SQL source failed: {type(exc).__name__}: {_first_line(exc)}", "source.table.sql") from None
    finally:
        engine.dispose()


def _maxcompute_rows(mc: MaxComputeSource, partition: PartitionSpec | None) -> Iterator[dict[str, Any]]:
    """Untested here: needs ``pip install pyodps`` and a MaxCompute project."""
    import os

    try:
        from odps import ODPS  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("MaxCompute source needs the optional 'pyodps' package", "source.table.maxcompute") from None
    odps = ODPS(os.environ.get(mc.access_id_env), os.environ.get(mc.secret_access_key_env), mc.project,
                endpoint=mc.endpoint)
    spec = f"{partition.column}={partition.value}" if partition else None
    with odps.get_table(mc.table).open_reader(partition=spec) as reader:
        for record in reader:
            yield dict(record)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


# --------------------------------------------------------------------------- coercion


class RecordError(ValueError):
    """One record cannot become a document; ``field`` names the culprit."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def coerce_record(raw: dict[str, Any], spec: TableSpec, columns: dict[str, str] | None = None, *,
                  skip: set[str] | None = None) -> dict[str, Any]:
    """Raw row → ``{field: value}`` for every schema field present (vector field excluded
    unless it holds a ready vector, which the caller handles). Raises RecordError."""
    if "__error__" in raw:
        raise RecordError(str(raw["__error__"]))
    columns = columns or {}
    out: dict[str, Any] = {}
    for field in spec.fields:
        if field.name == spec.vector_field or (skip and field.name in skip):
            continue
        column = columns.get(field.name, field.name)
        if column not in raw:
            continue
        value = raw[column]
        if value is None or (isinstance(value, str) and value == "" and field.type.is_numeric):
            if field.name == spec.primary_key:
                raise RecordError(f"primary key '{field.name}' is empty", field.name)
            continue
        try:
            out[field.name] = source_value(value, field)
        except ValueError as exc:
            raise RecordError(f"field '{field.name}': {exc}", field.name) from None
    if spec.primary_key not in out:
        raise RecordError(f"primary key '{spec.primary_key}' is missing (column "
                          f"'{columns.get(spec.primary_key, spec.primary_key)}')", spec.primary_key)
    return out


def raw_value(raw: dict[str, Any], field: str, columns: dict[str, str] | None = None) -> Any:
    return raw.get((columns or {}).get(field, field))
