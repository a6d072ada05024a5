"""Pushes that arrive while a rebuild runs: recorded, then replayed into the new generation.

A rebuild opens a journal for its table; ``apply_push`` writes to the live generation AND
appends the same operation (already embedded: replay never re-embeds) to the journal, both
under the journal's lock. Before switching, the rebuild replays the journal into the new
generation under that same lock, so no push can slip between replay and switch. The
journal is also a JSONL file in the ingest state dir, so a resumed rebuild replays pushes
recorded before a crash. Scope: one process (rebuilds started by the CLI against a data
dir a server also writes to are not journaled; start rebuilds through the API instead).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from adapter.engines.base import Document

_active: dict[str, "Journal"] = {}
_active_lock = threading.Lock()


class Journal:
    def __init__(self, table: str, path: Path):
        self.table = table
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()  # held by pushes (write live + record) and by replay+switch
        self.recorded = 0

    # -- recording (called by apply_push while holding self.lock) -------------------------

    def record_upserts(self, docs: Sequence[Document]) -> None:
        self._append([{"op": "add", "pk": d.pk, "fields": d.fields,
                       "vector": np.asarray(d.vector, dtype=np.float32).tolist()} for d in docs])

    def record_deletes(self, pks: Sequence[Any]) -> None:
        self._append([{"op": "delete", "pk": pk} for pk in pks])

    def _append(self, entries: list[dict]) -> None:
        if not entries:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            for entry in entries:
                handle.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
            handle.flush()
        self.recorded += len(entries)

    # -- replay -------------------------------------------------------------------------

    def replay(self, engine: Any, generation: str) -> int:
        """Apply every recorded operation, in order, to ``generation``. Returns how many."""
        if not self.path.exists():
            return 0
        count = 0
        batch: list[Document] = []

        def flush() -> None:
            if batch:
                engine.upsert(self.table, list(batch), generation=generation)
                batch.clear()

        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
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
        return count

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def open_journal(table: str, path: Path) -> Journal:
    with _active_lock:
        journal = _active.get(table)
        if journal is None:
            journal = _active[table] = Journal(table, path)
        return journal


def active_journal(table: str) -> Journal | None:
    with _active_lock:
        return _active.get(table)


def close_journal(table: str, journal: Journal) -> None:
    with _active_lock:
        if _active.get(table) is journal:
            del _active[table]
