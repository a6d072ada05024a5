"""Incremental pushes: HA3's ``POST /update/{table}/actions/bulk`` body into the live table.

    [{"cmd": "add", "fields": {"id": 1, "cate_id": 3, "vector_source_image": "<Base64>"}},
     {"cmd": "delete", "fields": {"id": 2}}]

``add`` replaces by primary key; ``delete`` removes (a missing key succeeds). The image of
an ``add`` comes as Base64 in the source field, as an object-store path when the source
field is an oss field (the table's stored credentials, else the environment's), or as a
ready vector in the vector field (``"0.1,0.2,..."`` with embedding_delimiter, or a list).
Commands apply in order; each bad document fails alone with its primary key and reason.
While a rebuild of the table is pending (running, or interrupted by a crash and not yet
resumed), every command is journaled first and replayed into the new generation before it
goes live (adapter.ingest.journal).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from adapter.ingest.image_stores import push_store
from adapter.ingest.journal import Journal, journal_file, pending_journal
from adapter.ingest.parts import IngestParts, PartsSource, parts_of
from adapter.ingest.prepare import (Failure, Prepared, RecordPreparer, embed_prepared, model_name, takes_decoded,
                                    to_document)
from adapter.ingest.service_pipeline import ingest_dir
from adapter.plan.engine import Engine
from adapter.schema.model import TableSpec
from adapter.sources.objectstore import ObjectStore
from adapter.values import source_value

SUPPORTED_COMMANDS = ("add", "delete")


@dataclass
class PushReport:
    table: str
    read: int = 0
    added: int = 0
    deleted: int = 0
    failures: list[Failure] = field(default_factory=list)
    journaled: bool = False  # a rebuild was running: the commands will reach its generation too

    @property
    def written(self) -> int:
        return self.added + self.deleted

    @property
    def failed(self) -> int:
        return len(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "read": self.read, "added": self.added, "deleted": self.deleted,
                "written": self.written, "failed": self.failed, "journaled": self.journaled,
                "failures": [f.to_dict() for f in self.failures]}


def apply_push(source: PartsSource, table: str, commands: Sequence[Any], *, pk_field: str | None = None,
               store: ObjectStore | None = None, concurrency: int = 8, embed_batch_size: int = 32) -> PushReport:
    """Apply HA3 push commands in order. Per-document failures are in the report; a missing
    table raises NotFoundError (the whole request is wrong, not one document)."""
    parts = parts_of(source)
    engine, embedder = parts.engine, parts.embedder
    spec = engine.get_spec(table)
    pk_name = pk_field or spec.primary_key
    if store is None:
        store = push_store(parts, spec)
    preparer = RecordPreparer(spec, store=store, image_kind="auto", decode=takes_decoded(embedder))
    model = model_name(spec)
    report = PushReport(table)

    # Split into runs of adds and deletes so that order across commands is kept.
    runs: list[tuple[str, list[tuple[int, dict]]]] = []
    for index, command in enumerate(commands):
        report.read += 1
        checked = _check_command(command, index, pk_name, spec)
        if isinstance(checked, Failure):
            report.failures.append(checked)
            continue
        cmd, fields = checked
        if runs and runs[-1][0] == cmd:
            runs[-1][1].append((index, fields))
        else:
            runs.append((cmd, [(index, fields)]))

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="push-fetch") as pool:
        for cmd, items in runs:
            if cmd == "delete":
                _apply_deletes(parts, table, [f[pk_name] for _, f in items], report)
            else:
                if pk_name != spec.primary_key:
                    items = [(i, {**f, spec.primary_key: f[pk_name]}) for i, f in items]
                prepared = list(pool.map(lambda pair: preparer.prepare(pair[1], pair[0]), items))
                embed_prepared(prepared, embedder, model, spec.dimension, embed_batch_size)
                _apply_adds(parts, table, prepared, report)
    return report


def _check_command(command: Any, index: int, pk_name: str, spec: TableSpec) -> tuple[str, dict] | Failure:
    if not isinstance(command, dict):
        return Failure(None, "bad_record", f"command [{index}] must be an object with cmd and fields", index)
    fields = command.get("fields")
    pk = fields.get(pk_name) if isinstance(fields, dict) else None
    cmd = str(command.get("cmd", "")).lower()
    if cmd not in SUPPORTED_COMMANDS:
        return Failure(pk, "bad_record", f"command [{index}]: cmd '{command.get('cmd')}' is not add or delete", index)
    if not isinstance(fields, dict):
        return Failure(pk, "bad_record", f"command [{index}]: 'fields' must be an object", index)
    if pk is None or pk == "":
        return Failure(None, "bad_record", f"command [{index}]: primary key '{pk_name}' is missing", index)
    if cmd == "delete":
        try:
            fields = {**fields, pk_name: source_value(pk, spec.field(spec.primary_key))}
        except ValueError as exc:
            return Failure(pk, "bad_record", f"command [{index}]: primary key: {exc}", index)
    return cmd, fields


def _journal_path(parts: IngestParts, table: str) -> Path | None:
    """Where an interrupted rebuild of ``table`` left its journal (service runtimes only)."""
    return journal_file(ingest_dir(parts.state_dir), table) if parts.state_dir is not None else None


def _write(parts: IngestParts, table: str, record: Callable[[Journal], None], write: Callable[[], Any]) -> tuple[Any, bool]:
    """``write()`` the live generation; first, while a rebuild of the table is pending (running
    or interrupted), ``record`` the operation in its journal, durably. (result, journaled)."""
    path = _journal_path(parts, table)
    while True:
        journal = pending_journal(table, path)
        if journal is None:
            return write(), False
        with journal.lock:
            if journal.closed:
                continue  # the rebuild switched meanwhile: write the new live generation
            record(journal)
            return write(), True


def _apply_deletes(parts: IngestParts, table: str, pks: list[Any], report: PushReport) -> None:
    engine: Engine = parts.engine
    result, journaled = _write(parts, table, lambda journal: journal.record_deletes(pks),
                               lambda: engine.delete(table, pks))
    report.journaled |= journaled
    failed = {str(f.pk) for f in result.failures}
    report.failures.extend(Failure(f.pk, "engine_rejection", f.reason) for f in result.failures)
    report.deleted += sum(1 for pk in pks if str(pk) not in failed)


def _apply_adds(parts: IngestParts, table: str, prepared: list[Prepared], report: PushReport) -> None:
    engine: Engine = parts.engine
    ok = [item for item in prepared if item.failure is None]
    report.failures.extend(item.failure for item in prepared if item.failure is not None)
    if not ok:
        return
    docs = [to_document(item) for item in ok]
    # Documents the engine rejects are journaled too: replay rejects them the same way.
    result, journaled = _write(parts, table, lambda journal: journal.record_upserts(docs),
                               lambda: engine.upsert(table, docs))
    report.journaled |= journaled
    rejected = {str(f.pk): f.reason for f in result.failures}
    for item in ok:
        if str(item.pk) in rejected:
            report.failures.append(Failure(item.pk, "engine_rejection", rejected[str(item.pk)], item.offset))
        else:
            report.added += 1
