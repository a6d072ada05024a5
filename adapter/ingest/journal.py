"""Pushes that arrive while a rebuild is pending: journaled, then replayed into its generation.

A rebuild creates its table's journal file (``<ingest dir>/<table>.journal.jsonl``) before it
begins a new generation, and removes it only after that generation went live. While the file
exists, whether the rebuild runs in this process, was interrupted, or the service restarted
since, every push appends its operations (already embedded: replay never re-embeds) to the
journal and makes them durable BEFORE writing the live generation. The rebuild replays the
whole journal into its generation and switches under the journal's lock, so no push falls
between replay and switch. Replay is idempotent (upsert and delete by primary key, in order),
so a crash during it or at the switch only means replaying again on resume.

The journal is stale when its table has no pending (non-live) generation: the switch went
through but the process died before removing the file, or the rebuild was aborted. Then the
live generation already holds every push, and the file is dropped (at service start and when
the next rebuild starts).

Scope: one process per data directory (a rebuild started by the CLI against a data dir a
server also writes to shares no lock with it; start rebuilds through the API instead).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from adapter.plan.engine import Engine
from adapter.plan.records import Document
from adapter.errors import NotFoundError

log = logging.getLogger("adapter.ingest")

SUFFIX = ".journal.jsonl"

_active: dict[str, "Journal"] = {}
_active_lock = threading.Lock()


def journal_file(ingest_dir: Path, table: str) -> Path:
    return Path(ingest_dir) / f"{table}{SUFFIX}"


class Journal:
    def __init__(self, table: str, path: Path):
        self.table = table
        self.path = Path(path)
        self.lock = threading.RLock()  # held by pushes (record + write live) and by replay+switch
        self.closed = False  # set at the switch: pushes then write the new live generation only
        self.recorded = 0
        self._create()

    def _create(self) -> None:
        """The file exists (durably) from now on; a torn last line from a crash is cut off
        (it was never acknowledged: records are synced before the push answers)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, _whole_lines(fd))
            os.fsync(fd)
        finally:
            os.close(fd)
        _sync_dir(self.path.parent)

    # -- recording (under self.lock, before the live write) ---------------------------------

    def record_upserts(self, docs: Sequence[Document]) -> None:
        self._append([{"op": "add", "pk": d.pk, "fields": d.fields,
                       "vector": np.asarray(d.vector, dtype=np.float32).tolist()} for d in docs])

    def record_deletes(self, pks: Sequence[Any]) -> None:
        self._append([{"op": "delete", "pk": pk} for pk in pks])

    def _append(self, entries: list[dict]) -> None:
        if not entries:
            return
        text = "".join(json.dumps(entry, ensure_ascii=False, default=str) + "\n" for entry in entries)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # durable before the push is acknowledged
        self.recorded += len(entries)

    # -- replay -------------------------------------------------------------------------

    def replay(self, engine: Engine, generation: str) -> int:
        """Apply every recorded operation, in order, to ``generation``. Returns how many."""
        if not self.path.exists():
            return 0
        count = 0
        rejected = 0
        batch: list[Document] = []

        def flush() -> None:
            nonlocal rejected
            if batch:
                rejected += len(engine.upsert(self.table, list(batch), generation=generation).failures)
                batch.clear()

        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break  # a torn record from a crash: never acknowledged
                if not line.strip():
                    continue
                entry = json.loads(line)
                count += 1
                if entry["op"] == "add":
                    batch.append(Document(entry["pk"], entry["fields"], np.asarray(entry["vector"], dtype=np.float32)))
                    if len(batch) >= 256:
                        flush()
                else:
                    flush()
                    engine.delete(self.table, [entry["pk"]], generation=generation)
        flush()
        if rejected:  # rejected when pushed too, or the rebuild changed the schema under them
            log.warning("ingest journal table=%s: %d replayed documents rejected by generation %s "
                        "(as when they were pushed, or by a changed schema)", self.table, rejected, generation)
        return count


def _whole_lines(fd: int, chunk: int = 1 << 16) -> int:
    """The length of the file up to and including its last newline."""
    end = os.fstat(fd).st_size
    pos = end
    while pos > 0:
        start = max(0, pos - chunk)
        data = os.pread(fd, pos - start, start)
        cut = data.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return 0


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_journal(table: str, path: Path) -> Journal:
    """The rebuild's journal: the registered one, else the file at ``path`` (created if
    missing, never truncated: records left by an interrupted rebuild are kept)."""
    with _active_lock:
        journal = _active.get(table)
        if journal is None:
            journal = _active[table] = Journal(table, path)
        return journal


def pending_journal(table: str, path: Path | None) -> Journal | None:
    """The journal a push to ``table`` must record in: the one a rebuild in this process
    opened, or the file an interrupted rebuild left at ``path``; None when none is pending."""
    with _active_lock:
        journal = _active.get(table)
        if journal is None and path is not None and path.exists():
            journal = _active[table] = Journal(table, path)
        return journal


def close_journal(table: str, journal: Journal) -> None:
    """After the switch (caller holds ``journal.lock``) or an abort: no longer pending."""
    with _active_lock:
        journal.closed = True
        journal.path.unlink(missing_ok=True)
        if _active.get(table) is journal:
            del _active[table]


def has_pending_generation(engine: Engine, table: str) -> bool:
    try:
        return any(not g.get("live") for g in engine.generations(table))
    except NotFoundError:
        return False


def discard_if_stale(engine: Engine, table: str, path: Path) -> bool:
    """Drop ``table``'s journal when no rebuild is pending (its records are all live)."""
    if not path.exists() or has_pending_generation(engine, table):
        return False
    journal = pending_journal(table, path)
    if journal is not None:
        close_journal(table, journal)
    log.info("ingest journal table=%s dropped: no rebuild pending, the live generation holds its pushes", table)
    return True


def discard_stale_journals(engine: Engine, ingest_dir: Path) -> list[str]:
    """At service start: drop every stale journal in ``ingest_dir``; returns their tables."""
    dropped = []
    for path in sorted(Path(ingest_dir).glob(f"*{SUFFIX}")):
        table = path.name[: -len(SUFFIX)]
        if discard_if_stale(engine, table, path):
            dropped.append(table)
    return dropped
