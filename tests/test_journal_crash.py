"""Acknowledged pushes survive every crash around a rebuild (issue 25, finding 3).

Each step runs in its own process, as a restarted service would, over one data directory,
and most end with ``os._exit`` (no cleanup, no checkpoint, no close: a crash). The rebuild is
the one ``POST .../reindex`` runs (a stored pipeline, the service's runtime); pushes go
through ``do_push``, as ``POST /update/{table}/actions/bulk`` does. A push counts as
acknowledged once ``do_push`` has returned."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = "journaled"
ROWS = 20

CHILD = r"""
import json, os, sys
from pathlib import Path
import numpy as np
from adapter.config import Settings
from adapter.runtime import Runtime

data, step, arg = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
runtime = Runtime.from_settings(Settings.model_validate({"engine": {"kind": "embedded", "data_dir": str(data)}}))
engine = runtime.engine
TABLE = "journaled"

def vec(pk):
    return np.random.default_rng(pk).random(512).round(4).tolist()

def crash():
    sys.stdout.flush()
    os._exit(137)

def push(arg):
    from adapter.server.routes_push import do_push
    commands = [{"cmd": "add", "fields": {"id": pk, "cate_id": 7, "vector": vec(pk)}} for pk in arg.get("add", [])]
    commands += [{"cmd": "delete", "fields": {"id": pk}} for pk in arg.get("delete", [])]
    status, body = do_push(runtime, TABLE, None, commands)
    return {"status": status, "written": body["written"]}

def rebuild_now(progress=None):
    from adapter.ingest.rebuild import rebuild
    from adapter.ingest.service_pipeline import load_service_pipeline
    return rebuild(runtime, load_service_pipeline(runtime, TABLE, TABLE), progress=progress or "none")

if step == "setup":  # the table, its stored schema and pipeline, and live rows 1..ROWS
    from adapter.schema.parse import parse_schema
    schema = json.loads(Path("mappings/image_search_hnsw_ip.json").read_text())
    runtime.create_table(TABLE, schema)
    (data / "rows.jsonl").write_text("".join(json.dumps({"id": i, "cate_id": 1, "vector": vec(i)}) + "\n"
                                             for i in range(1, arg["rows"] + 1)))
    (data / "pipelines").mkdir()
    (data / "pipelines" / f"{TABLE}.json").write_text(json.dumps(
        {"source": {"table": {"path": "rows.jsonl"}, "image": {"kind": "vector"}}, "batch_size": 4}))
    rebuild_now()
elif step == "crash-mid-rebuild":  # a second rebuild dies after its first batches
    def progress(snapshot):
        if snapshot["read"] >= 8:
            crash()
    rebuild_now(progress)
elif step == "push":  # acknowledged once do_push returns; then the process dies
    print(json.dumps(push(arg)))
    crash()
elif step == "push-during-rebuild-then-crash":  # acknowledged while the rebuild runs, then both die
    acks = []
    def progress(snapshot):
        if snapshot["read"] >= 4 and not acks:
            acks.append(push(arg))
            print(json.dumps(acks[0]))
        if snapshot["read"] >= 12:
            crash()
    rebuild_now(progress)
elif step == "resume-crash-in-replay":  # catch-up: dies after the first replayed write
    from adapter.ingest import journal
    real_replay = journal.Journal.replay
    class Dying:
        def __init__(self, inner):
            self.inner = inner
        def upsert(self, *args, **kwargs):
            result = self.inner.upsert(*args, **kwargs)
            crash()
        delete = upsert
    journal.Journal.replay = lambda self, engine, generation: real_replay(self, Dying(engine), generation)
    rebuild_now()
elif step == "resume-crash-at-switch":  # the switch commits, then the process dies
    real_switch = engine.switch_generation
    def switch(*args, **kwargs):
        real_switch(*args, **kwargs)
        crash()
    engine.switch_generation = switch
    rebuild_now()
elif step == "resume":
    report = rebuild_now()
    print(json.dumps({"switched": report.switched, "replayed": report.journal_replayed}))
elif step == "check":
    hits = engine.get(TABLE, arg["pks"], output_fields=["cate_id"])
    gens = engine.generations(TABLE)
    print(json.dumps({"present": sorted([h.pk, h.fields["cate_id"]] for h in hits),
                      "pending": [g["generation"] for g in gens if not g["live"]], "count": engine.count(TABLE)}))
    runtime.close()
"""


def _run(data: Path, step: str, crashes: bool = False, **arg) -> dict | None:
    child = subprocess.run([sys.executable, "-c", CHILD, str(data), step, json.dumps(arg)], cwd=ROOT,
                           capture_output=True, text=True, timeout=180)
    assert child.returncode == (137 if crashes else 0), f"{step}: rc {child.returncode}\n{child.stderr[-3000:]}"
    lines = child.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def _pushed(data: Path, step: str = "push", **commands) -> None:
    ack = _run(data, step, crashes=True, **commands)
    assert ack["status"] == 200 and ack["written"] == sum(len(v) for v in commands.values()), ack


@pytest.fixture
def interrupted(tmp_path):
    """A table live with rows 1..20 whose second rebuild crashed part-way."""
    data = tmp_path / "data"
    _run(data, "setup", rows=ROWS)
    _run(data, "crash-mid-rebuild", crashes=True)
    state = _run(data, "check", pks=[])
    assert state["pending"], "the crashed rebuild left its generation pending"
    return data


def _assert_survived(data: Path) -> None:
    state = _run(data, "check", pks=[3, 500, 501, 502])
    assert state["pending"] == []
    assert state["present"] == [[500, 7], [501, 7], [502, 7]]
    assert state["count"] == ROWS - 1 + 3  # rows 1..20 rebuilt, 3 deleted, 500-502 added


def test_pushes_after_a_restart_survive_the_resumed_rebuild(interrupted):
    """Crash before resume: two restarts, each acknowledges pushes, then the rebuild resumes."""
    _pushed(interrupted, add=[500, 501], delete=[3])
    _pushed(interrupted, add=[502])
    resumed = _run(interrupted, "resume")
    assert resumed["switched"] and resumed["replayed"] == 4
    _assert_survived(interrupted)


def test_a_crash_during_catch_up_replays_again(interrupted):
    _pushed(interrupted, add=[500, 501], delete=[3])
    _run(interrupted, "resume-crash-in-replay", crashes=True)
    _pushed(interrupted, add=[502])  # acknowledged between the two attempts
    assert _run(interrupted, "resume")["switched"]
    _assert_survived(interrupted)


def test_a_crash_at_the_switch_keeps_every_push(interrupted):
    _pushed(interrupted, add=[500, 501], delete=[3])
    _run(interrupted, "resume-crash-at-switch", crashes=True)
    _pushed(interrupted, add=[502])  # the switch went through: straight into the new live generation
    _assert_survived(interrupted)
    assert not (interrupted / "ingest" / f"{TABLE}.journal.jsonl").exists()  # dropped at start: stale


def test_pushes_during_a_running_rebuild_survive_its_crash(interrupted):
    """The journal outlives the process that recorded into it; the rebuild resumes twice."""
    _pushed(interrupted, "push-during-rebuild-then-crash", add=[500, 501, 502], delete=[3])
    assert _run(interrupted, "check", pks=[500])["present"] == [[500, 7]]  # live meanwhile
    _run(interrupted, "crash-mid-rebuild", crashes=True)
    assert _run(interrupted, "resume")["switched"]
    _assert_survived(interrupted)
