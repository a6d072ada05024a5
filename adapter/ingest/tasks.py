"""Task status for the HTTP API: one entry per rebuild (or large push) the service runs."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from adapter.errors import NotFoundError

TaskState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
MAX_ERRORS_KEPT = 100  # the full list is in the task's report file


@dataclass
class Task:
    id: str
    kind: str  # "rebuild" | "push"
    table: str
    state: TaskState = "pending"
    total: int | None = None
    read: int = 0
    indexed: int = 0
    failed: int = 0
    generation: str | None = None
    message: str | None = None
    report_file: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    @property
    def progress(self) -> float | None:
        if not self.total:
            return 1.0 if self.state == "succeeded" else None
        return min(1.0, self.read / self.total)

    def to_dict(self) -> dict[str, Any]:
        elapsed = ((self.finished or time.time()) - self.started) if self.started else 0.0
        return {
            "taskId": self.id, "kind": self.kind, "table": self.table, "state": self.state,
            "total": self.total, "read": self.read, "indexed": self.indexed, "failed": self.failed,
            "progress": self.progress, "rate": round(self.read / elapsed, 2) if elapsed > 0 else None,
            "generation": self.generation, "message": self.message, "reportFile": self.report_file,
            "errors": list(self.errors), "created": self.created, "started": self.started,
            "finished": self.finished,
        }


class TaskRegistry:
    """Thread-safe; tasks live in memory (reports persist on disk). Oldest finished evicted."""

    def __init__(self, keep: int = 200):
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def create(self, kind: str, table: str) -> Task:
        task = Task(id=uuid.uuid4().hex[:16], kind=kind, table=table)
        with self._lock:
            self._tasks[task.id] = task
            self._evict()
        return task

    def get(self, task_id: str) -> Task:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            raise NotFoundError(f"no task '{task_id}'", "taskId")
        return task

    def list(self, table: str | None = None) -> list[Task]:
        with self._lock:
            tasks = list(self._tasks.values())
        return [t for t in tasks if table is None or t.table == table]

    def running(self, table: str, kind: str = "rebuild") -> Task | None:
        return next((t for t in self.list(table) if t.kind == kind and t.state in ("pending", "running")), None)

    def update(self, task_id: str, **changes: Any) -> Task:
        task = self.get(task_id)
        with self._lock:
            for key, value in changes.items():
                if key == "errors":
                    room = MAX_ERRORS_KEPT - len(task.errors)
                    task.errors.extend(list(value)[:max(0, room)])
                else:
                    setattr(task, key, value)
            if changes.get("state") == "running" and task.started is None:
                task.started = time.time()
            if changes.get("state") in ("succeeded", "failed", "cancelled"):
                task.finished = time.time()
        return task

    def progress_callback(self, task_id: str) -> Callable[[dict[str, Any]], None]:
        """A ``progress=`` callable for ``rebuild`` that mirrors counts into this task."""

        def update(snapshot: dict[str, Any]) -> None:
            fields = {k: snapshot[k] for k in ("total", "read", "indexed", "failed", "generation") if k in snapshot}
            if snapshot.get("failures"):
                fields["errors"] = snapshot["failures"]
            self.update(task_id, **fields)

        return update

    def run_in_thread(self, task: Task, work: Callable[[Callable[[dict[str, Any]], None]], Any]) -> threading.Thread:
        """Run ``work(progress_callback)`` in a daemon thread, tracking its final state."""

        def runner() -> None:
            self.update(task.id, state="running")
            try:
                result = work(self.progress_callback(task.id))
                final = getattr(result, "to_dict", lambda: {})()
                self.update(task.id, state="succeeded", **{k: final[k] for k in ("read", "indexed", "failed")
                                                              if k in final})
            except Exception as exc:  # noqa: BLE001 - the task records why it failed
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                self.update(task.id, state="failed", message=f"{type(exc).__name__}: {first}")

        thread = threading.Thread(target=runner, name=f"task-{task.id}", daemon=True)
        thread.start()
        return thread

    def _evict(self) -> None:
        finished = sorted((t for t in self._tasks.values() if t.finished), key=lambda t: t.finished or 0)
        while len(self._tasks) > self._keep and finished:
            self._tasks.pop(finished.pop(0).id, None)
