"""Full rebuild: a table's rows → a new engine generation → atomic switch.

    begin_generation ─► (Qc) embed a sample, engine.train ─► batches ─► replay pushes ─► switch

Batches flow through three stages with bounded hand-offs, so memory stays flat on a
1M-row table: a reader thread cuts rows into batches and submits each record to a
fetch+decode thread pool (object store / Base64 / ready vector); the calling thread
embeds each batch through the EmbeddingService; a writer thread bulk-upserts it into the
new generation and commits the checkpoint. At most ``queue_depth`` batches wait between
reader and embedder, one between embedder and writer.

Resumable: after every written batch the checkpoint (``<state dir>/<table>.checkpoint.json``)
records the next row offset, the counts, the generation id and the report file's length.
A crash or Ctrl-C resumes at that offset in the same generation: finished batches are
neither re-read from the store nor re-embedded, and upsert-by-primary-key means a batch
written but not yet checkpointed is simply written again, never duplicated.

Accounting: every row read is either indexed or failed (``read == indexed + failed``);
each failure goes to the JSONL report file with its primary key and reason.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import random
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np

from adapter.plan.engine import Engine
from adapter.embed.base import Embedder
from adapter.errors import AdapterError, ConfigError, ConflictError, NotFoundError
from adapter.ingest.image_stores import open_image_store
from adapter.ingest.journal import close_journal, discard_if_stale, open_journal
from adapter.ingest.parts import IngestParts, PartsSource, parts_of
from adapter.ingest.pipeline import PipelineConfig
from adapter.ingest.prepare import (Failure, Prepared, RecordPreparer, embed_prepared, model_name, takes_decoded,
                                    to_document)
from adapter.schema.model import TableSpec
from adapter.sources.tables import Row, count_rows, read_table

log = logging.getLogger("adapter.ingest")

ProgressArg = Union[str, Callable[[dict[str, Any]], None], None]
MAX_FAILURES_IN_MEMORY = 10_000  # all of them are in the report file


class RebuildCancelled(AdapterError):
    """The rebuild was stopped (Ctrl-C or a stop request); its checkpoint allows resuming."""

    code = 4099


@dataclass
class IngestReport:
    table: str
    generation: str | None = None
    total: int | None = None
    read: int = 0
    indexed: int = 0
    failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    resumed_from: int = 0  # rows already done by an earlier, interrupted run
    trained_on: int = 0  # Qc training sample size
    journal_replayed: int = 0  # pushes replayed into the new generation before the switch
    switched: bool = False
    elapsed_s: float = 0.0
    report_file: str | None = None

    @property
    def reconciles(self) -> bool:
        return self.read == self.indexed + self.failed

    def failures_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for failure in self.failures:
            counts[failure.reason] = counts.get(failure.reason, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = [f.to_dict() for f in self.failures]
        data["failures_by_reason"] = self.failures_by_reason()
        return data


@dataclass
class Checkpoint:
    table: str
    fingerprint: str
    generation: str
    next_offset: int = 0
    read: int = 0
    indexed: int = 0
    failed: int = 0
    trained: bool = False
    trained_on: int = 0
    report_bytes: int = 0
    updated: float = 0.0

    @classmethod
    def load(cls, path: Path) -> "Checkpoint | None":
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        self.updated = time.time()
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # atomic: a crash leaves the old or the new checkpoint


def parts_from_pipeline(pipeline: PipelineConfig) -> IngestParts:
    """Engine and embedder for a CLI rebuild, from the pipeline's engine/models sections."""
    from adapter.embed.registry import ModelRegistry
    from adapter.embed.service import EmbeddingService
    from adapter.engines.factory import EngineConfig, open_engine

    section = pipeline.engine
    if section is None:
        raise ConfigError("the pipeline has no 'engine' section (kind, data_dir or url)", "$.engine")
    config = EngineConfig(kind=section.kind, data_dir=section.data_dir, url=section.url, username=section.username,
                          password=section.password.get_secret_value() if section.password else None,
                          verify_certs=section.verify_certs)
    # A CLI rebuild on the embedded engine keeps derived model files in its data dir, as serve does.
    registry = ModelRegistry.from_config(pipeline.models_config, data_dir=section.data_dir)
    return IngestParts(open_engine(config), EmbeddingService(registry))


# --------------------------------------------------------------------------- progress


class Progress:
    """A rich progress bar (rate, ETA) on a terminal; structured log lines otherwise."""

    def __init__(self, mode: ProgressArg, table: str, log_every_s: float = 5.0):
        self.callback = mode if callable(mode) else None
        mode = "callback" if callable(mode) else (mode or "none")
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.table = table
        self.log_every_s = log_every_s
        self._bar = None
        self._task = None
        self._last_log = 0.0
        self._started = time.monotonic()
        self._base = 0

    def start(self, total: int, done: int, generation: str) -> None:
        self._base = done
        self._started = time.monotonic()
        self.total = total
        self.generation = generation
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TaskProgressColumn,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)

            self._bar = RichProgress(
                TextColumn(f"[bold]{self.table}[/]"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[rate]:.1f} rec/s"), TextColumn("failed {task.fields[failed]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._bar.start()
            self._task = self._bar.add_task("rebuild", total=total, completed=done, rate=0.0, failed=0)
        elif self.mode == "log":
            log.info("ingest start table=%s generation=%s total=%d resume_at=%d", self.table, generation, total, done)

    def update(self, report: IngestReport, new_failures: list[Failure], final: bool = False) -> None:
        elapsed = max(1e-9, time.monotonic() - self._started)
        rate = (report.read - self._base) / elapsed
        if self.mode == "bar" and self._bar is not None:
            self._bar.update(self._task, completed=report.read, rate=rate, failed=report.failed)
        elif self.mode == "log":
            now = time.monotonic()
            if final or now - self._last_log >= self.log_every_s:
                self._last_log = now
                left = max(0, (report.total or 0) - report.read)
                eta = f"{left / rate:.0f}s" if rate > 0 else "?"
                log.info("ingest progress table=%s read=%d total=%s indexed=%d failed=%d rate=%.1f/s eta=%s",
                         self.table, report.read, report.total, report.indexed, report.failed, rate, eta)
        elif self.callback is not None:
            self.callback({"table": self.table, "generation": report.generation, "total": report.total,
                           "read": report.read, "indexed": report.indexed, "failed": report.failed,
                           "rate": rate, "failures": [f.to_dict() for f in new_failures], "final": final})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------- stages

_END = object()


def embedded_batches(rows: Iterable[Row], preparer: RecordPreparer, embedder: Embedder | None, model: str, dimension: int, *,
                     batch_size: int, embed_batch_size: int, concurrency: int, queue_depth: int,
                     cache: dict[int, Prepared] | None = None,
                     stop: threading.Event | None = None) -> Iterator[tuple[list[Row], list[Prepared]]]:
    """Rows → batches of prepared, embedded records, in row order, with bounded buffering."""
    cache = cache if cache is not None else {}
    hand_off: queue.Queue = queue.Queue(maxsize=queue_depth)
    halt = threading.Event()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ingest-fetch")

    def put(item: Any) -> bool:
        while not halt.is_set():
            try:
                hand_off.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def submit(batch: list[Row]) -> bool:
        futures = [None if row.offset in cache else pool.submit(preparer.prepare, row.data, row.offset)
                   for row in batch]
        return put((batch, futures))

    def reader() -> None:
        try:
            batch: list[Row] = []
            for row in rows:
                if halt.is_set():
                    return
                batch.append(row)
                if len(batch) >= batch_size:
                    if not submit(batch):
                        return
                    batch = []
            if batch and not submit(batch):
                return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
            put(exc)

    thread = threading.Thread(target=reader, name="ingest-reader", daemon=True)
    thread.start()
    try:
        while True:
            if stop is not None and stop.is_set():
                raise RebuildCancelled("rebuild stopped; run it again to resume from the checkpoint")
            item = hand_off.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            batch, futures = item
            prepared = [cache.pop(row.offset) if fut is None else fut.result() for row, fut in zip(batch, futures)]
            embed_prepared(prepared, embedder, model, dimension, embed_batch_size)
            yield batch, prepared
    finally:
        halt.set()
        pool.shutdown(wait=True, cancel_futures=True)
        thread.join(timeout=5)


def sample_size(spec: TableSpec, total: int, cap: int) -> int:
    """Qc training sample per train_sample_ratio / train_sample_count (HA3 build params)."""
    qc = spec.vector_index.qc
    size = total
    if qc is not None and qc.train_sample_ratio:
        size = math.ceil(qc.train_sample_ratio * total)
    if qc is not None and qc.train_sample_count:
        size = min(size, qc.train_sample_count)
    return max(0, min(size, cap, total))


# --------------------------------------------------------------------------- rebuild


_running: set[str] = set()
_running_lock = threading.Lock()


def rebuild(runtime: PartsSource, pipeline: PipelineConfig, progress: ProgressArg = "auto", *,
            stop: threading.Event | None = None) -> IngestReport:
    """Rebuild ``pipeline.table`` from its source into a new generation, then switch to it.

    One rebuild per table at a time in this process (ConflictError otherwise)."""
    with _running_lock:
        if pipeline.table in _running:
            raise ConflictError(f"a rebuild of '{pipeline.table}' is already running", "table")
        _running.add(pipeline.table)
    try:
        return _rebuild(runtime, pipeline, progress, stop)
    finally:
        with _running_lock:
            _running.discard(pipeline.table)


def _rebuild(runtime: PartsSource, pipeline: PipelineConfig, progress: ProgressArg,
             stop: threading.Event | None) -> IngestReport:
    parts = parts_of(runtime)
    engine, embedder = parts.engine, parts.embedder
    if pipeline.source.table is None:
        raise ConfigError("this pipeline has no source.table to rebuild from (API-push tables are fed by "
                          "POST /update/{table}/actions/bulk)", "$.source.table")
    spec = pipeline.load_spec()
    table = pipeline.table
    store = open_image_store(pipeline, spec, parts)
    preparer = RecordPreparer(spec, store=store, image_kind=pipeline.source.image.kind,
                              columns=pipeline.source.table.columns, decode=takes_decoded(embedder))
    model = model_name(spec, pipeline.models, pipeline.model)
    started = time.monotonic()

    try:
        engine.get_spec(table)
    except NotFoundError:
        engine.create_table(spec)

    state_dir = pipeline.state_dir()
    state_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, report_path = pipeline.checkpoint_path(), pipeline.report_path()
    report_path.parent.mkdir(parents=True, exist_ok=True)
    discard_if_stale(engine, table, pipeline.journal_path())  # a switch that went through before a crash
    ckpt, superseded = _resume(engine, pipeline, ckpt_path)
    # The journal exists before any new generation does, and keeps what an interrupted
    # rebuild recorded: no acknowledged push can fall between a crash and this rebuild.
    journal = open_journal(table, pipeline.journal_path())
    if ckpt is None:
        generation = engine.begin_generation(table, spec)
        if superseded is not None:  # only now: a pending generation exists throughout
            _abort_quietly(engine, table, superseded)
        ckpt = Checkpoint(table=table, fingerprint=pipeline.fingerprint(), generation=generation)
        report_path.write_text("", encoding="utf-8")
        ckpt.save(ckpt_path)
        resumed_from = 0
    else:
        with report_path.open("a+b") as handle:  # drop failures of a batch that was never committed
            handle.truncate(ckpt.report_bytes)
        resumed_from = ckpt.next_offset
        log.info("ingest resume table=%s generation=%s at offset=%d", table, ckpt.generation, ckpt.next_offset)

    report = IngestReport(table=table, generation=ckpt.generation, read=ckpt.read, indexed=ckpt.indexed,
                          failed=ckpt.failed, resumed_from=resumed_from, trained_on=ckpt.trained_on,
                          report_file=str(report_path))
    reporter = Progress(progress, table)
    try:
        total = count_rows(pipeline.source.table)
        report.total = total
        knobs = dict(batch_size=pipeline.batch_size, embed_batch_size=pipeline.embed_batch_size,
                     concurrency=pipeline.concurrency, queue_depth=pipeline.queue_depth, stop=stop)
        cache: dict[int, Prepared] = {}
        # Below linear_build_threshold a Qc generation stays exact (HA3 brute-forces it): no sample to embed.
        if spec.vector_index.trains_ivf(total) and not ckpt.trained:
            cache = _train(engine, pipeline, spec, preparer, embedder, model, total, ckpt.generation, knobs)
            ckpt.trained, ckpt.trained_on = True, len(cache)
            report.trained_on = len(cache)
            ckpt.save(ckpt_path)
        reporter.start(total, ckpt.next_offset, ckpt.generation)
        _write_batches(engine, pipeline, preparer, embedder, model, spec, ckpt, ckpt_path, report_path, report,
                       reporter, cache, knobs)
        # Pushes recorded during the rebuild go into the new generation; the lock keeps any
        # new push out until readers see the new generation.
        with journal.lock:
            report.journal_replayed = journal.replay(engine, ckpt.generation)
            engine.switch_generation(table, ckpt.generation)
            close_journal(table, journal)
        report.switched = True
        ckpt_path.unlink(missing_ok=True)
        reporter.update(report, [], final=True)
        log.info("ingest done table=%s generation=%s read=%d indexed=%d failed=%d replayed=%d",
                 table, ckpt.generation, report.read, report.indexed, report.failed, report.journal_replayed)
    except KeyboardInterrupt:
        raise RebuildCancelled(f"rebuild of '{table}' interrupted at row {ckpt.next_offset}; "
                               "run it again to resume") from None
    finally:
        reporter.close()
        report.elapsed_s = time.monotonic() - started
    report.failures = _read_failures(report_path)
    return report


def watch(runtime: PartsSource, pipeline: PipelineConfig, *, interval_s: float = 60.0, progress: ProgressArg = "auto",
          stop: threading.Event | None = None, on_report: Callable[[IngestReport], None] | None = None) -> int:
    """Automatic reindexing: rebuild now, then again whenever the table's files (or the set
    of partition files a glob matches) change. Returns the number of rebuilds when stopped."""
    from adapter.sources.tables import table_signature

    assert pipeline.source.table is not None
    stop = stop or threading.Event()
    seen = None
    rebuilds = 0
    while not stop.is_set():
        signature = table_signature(pipeline.source.table)
        if signature != seen:
            seen = signature
            report = rebuild(runtime, pipeline, progress=progress, stop=stop)
            rebuilds += 1
            if on_report is not None:
                on_report(report)
            continue  # re-check at once: the files may have changed during the rebuild
        stop.wait(interval_s)
    return rebuilds


def abort_rebuild(runtime: PartsSource, pipeline: PipelineConfig) -> None:
    """Throw away an interrupted rebuild: its generation, checkpoint and journal (the live
    generation holds every push, so the journal has nothing left to give)."""
    engine = parts_of(runtime).engine
    ckpt = Checkpoint.load(pipeline.checkpoint_path())
    if ckpt is not None:
        try:
            engine.abort_generation(pipeline.table, ckpt.generation)
        except NotFoundError:
            pass
    pipeline.checkpoint_path().unlink(missing_ok=True)
    discard_if_stale(engine, pipeline.table, pipeline.journal_path())


def _resume(engine: Engine, pipeline: PipelineConfig, path: Path) -> tuple[Checkpoint | None, str | None]:
    """(the checkpoint to resume, or None; a pending generation to abort once a new one
    exists: the checkpoint is from another pipeline or schema)."""
    ckpt = Checkpoint.load(path)
    if ckpt is None:
        return None, None
    try:
        gens = {g["generation"]: g for g in engine.generations(pipeline.table)}
    except NotFoundError:
        return None, None
    if ckpt.generation not in gens or gens[ckpt.generation].get("live"):
        return None, None
    if ckpt.fingerprint != pipeline.fingerprint():
        log.warning("ingest checkpoint for table=%s is from a different pipeline/schema; starting over", pipeline.table)
        return None, ckpt.generation
    return ckpt, None


def _abort_quietly(engine: Engine, table: str, generation: str) -> None:
    try:
        engine.abort_generation(table, generation)
    except AdapterError:
        pass


def _train(engine: Engine, pipeline: PipelineConfig, spec: TableSpec, preparer: RecordPreparer, embedder: Embedder | None,
           model: str, total: int, generation: str, knobs: dict) -> dict[int, Prepared]:
    """Embed a random sample, train the generation's IVF on it; keep the sample for reuse."""
    size = sample_size(spec, total, pipeline.train_sample_max)
    if size == 0:
        return {}
    chosen = set(random.Random(pipeline.train_seed).sample(range(total), size))
    rows = (row for row in read_table(pipeline.source.table) if row.offset in chosen)
    cache: dict[int, Prepared] = {}
    for _, prepared in embedded_batches(rows, preparer, embedder, model, spec.dimension, **knobs):
        for item in prepared:
            if item.failure is None and item.vector is not None:
                cache[item.offset] = item  # failed ones are read again (and reported) by the main pass
    if cache:
        sample = np.stack([item.vector for item in cache.values()]).astype(np.float32)
        engine.train(pipeline.table, sample, generation=generation, doc_count=total)
        log.info("ingest trained table=%s generation=%s sample=%d", pipeline.table, generation, len(cache))
    return cache


def _write_batches(engine: Engine, pipeline: PipelineConfig, preparer: RecordPreparer, embedder: Embedder | None, model: str,
                   spec: TableSpec, ckpt: Checkpoint, ckpt_path: Path, report_path: Path, report: IngestReport,
                   reporter: Progress, cache: dict[int, Prepared], knobs: dict) -> None:
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")
    pending: Future | None = None

    def write(batch: list[Row], prepared: list[Prepared]) -> None:
        ok = [item for item in prepared if item.failure is None]
        new_failures = [item.failure for item in prepared if item.failure is not None]
        if ok:
            result = engine.upsert(pipeline.table, [to_document(item) for item in ok], generation=ckpt.generation)
            rejected = {str(f.pk): f.reason for f in result.failures}
            for item in ok:
                if str(item.pk) in rejected:
                    new_failures.append(Failure(item.pk, "engine_rejection", rejected[str(item.pk)], item.offset))
        with report_path.open("a", encoding="utf-8") as handle:
            for failure in new_failures:
                handle.write(json.dumps(failure.to_dict(), ensure_ascii=False, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            report_bytes = handle.tell()
        report.read += len(batch)
        report.failed += len(new_failures)
        report.indexed += len(batch) - len(new_failures)
        ckpt.next_offset = batch[-1].offset + 1
        ckpt.read, ckpt.indexed, ckpt.failed, ckpt.report_bytes = report.read, report.indexed, report.failed, report_bytes
        ckpt.save(ckpt_path)
        reporter.update(report, new_failures)

    try:
        rows = read_table(pipeline.source.table, start=ckpt.next_offset)
        for batch, prepared in embedded_batches(rows, preparer, embedder, model, spec.dimension, cache=cache, **knobs):
            if pending is not None:
                pending.result()  # one write in flight: order kept, errors surface here
            pending = writer.submit(write, batch, prepared)
        if pending is not None:
            pending.result()
    finally:
        writer.shutdown(wait=True)


def _read_failures(path: Path) -> list[Failure]:
    failures: list[Failure] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if len(failures) >= MAX_FAILURES_IN_MEMORY:
                    break
                if line.strip():
                    data = json.loads(line)
                    failures.append(Failure(data.get("pk"), data["reason"], data.get("message", ""), data.get("offset")))
    except OSError:
        pass
    return failures
