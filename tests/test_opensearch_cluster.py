"""A three-node OpenSearch cluster on loopback (`scripts/opensearch.sh start --nodes 3`) and
what the service does when nodes die.

- kill -9 one node while two clients push and two search: every push answered 200 is found
  once the node is back, nothing is duplicated, and every search either answers completely or
  fails with an HA-format 503 — never a 200 missing a shard's documents;
- two nodes down with no replicas (red): queries are a clear 503, /health says degraded, and
  both recover by themselves when the nodes return;
- a rebuild (new index, alias switch) while a node is down: it finishes, with the old
  generation serving until the switch.

The cluster is separate from the suite's single node (state in .opensearch/cluster3, ports
9210-9212, 512 MiB heap each) and is started only when the live suite runs (OPENSEARCH_URL).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from _opensearch_support import require_opensearch, unique
from _server_support import ADMIN, basic, live_server, make_settings

pytestmark = [pytest.mark.opensearch, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PORT = int(os.environ.get("OPENSEARCH_CLUSTER_PORT", "9210"))
DIM = 8
INSTANCE = "ha3-adapter"
TABLES = f"/openapi/ha3/instances/{INSTANCE}/tables"


class Cluster:
    """scripts/opensearch.sh for a three-node cluster with a state folder of its own."""

    def __init__(self) -> None:
        self.env = {**os.environ, "OPENSEARCH_STATE": str(ROOT / ".opensearch" / "cluster3")}
        self.url = ""

    def script(self, *args: str) -> str:
        done = subprocess.run([str(ROOT / "scripts" / "opensearch.sh"), *args], env=self.env, text=True,
                              capture_output=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    def start(self) -> None:
        self.url = self.script("start", "--nodes", "3", "--port", str(PORT), "--heap", "512m")
        assert len(self.url.split(",")) == 3

    def kill(self, node: int) -> None:
        self.script("kill-node", str(node))

    def revive(self, node: int) -> None:
        self.script("start-node", str(node))

    def health(self, wait_for: str | None = None) -> dict:
        params = {"wait_for_status": wait_for, "timeout": "120s"} if wait_for else {"local": "true"}
        return httpx.get(f"http://127.0.0.1:{PORT}/_cluster/health", params=params, timeout=150).json()


@pytest.fixture(scope="module")
def cluster():
    require_opensearch()  # the live suite is on
    if not (shutil.which("java") and shutil.which("mvn")):
        pytest.skip("the three-node cluster is assembled by scripts/opensearch.sh, which needs java and mvn")
    c = Cluster()
    c.start()
    yield c
    c.script("stop")


@pytest.fixture(scope="module")
def service(cluster, tmp_path_factory):
    """The service on all three nodes; tables named live_* get 3 shards, rb_* and red_* their own."""
    from adapter.embed.testing import make_tiny_clip
    from adapter.runtime import Runtime

    tmp = tmp_path_factory.mktemp("cluster")
    tables = {"load": {"shards": 3, "replicas": 1}, "red": {"shards": 3, "replicas": 0},
              "rebuilt": {"shards": 3, "replicas": 1}}
    names = {key: unique(f"c_{key}") for key in tables}
    engine = {"kind": "opensearch", "url": cluster.url, "retry_deadline_s": 30,
              "tables": {names[k]: v for k, v in tables.items()}}
    runtime = Runtime.from_settings(make_settings(tmp, make_tiny_clip(tmp / "clip", dim=DIM), engine=engine))
    with live_server(runtime) as base:
        with httpx.Client(base_url=base, headers=basic(ADMIN), timeout=120) as http:
            for name in names.values():
                r = http.post(TABLES, json={"name": name, "schema": vector_schema()})
                assert r.status_code == 200, r.text
            yield base, http, names, runtime
            for name in names.values():
                http.delete(f"{TABLES}/{name}")
    runtime.close()


def vector_schema() -> dict:
    """The seed's layout with the vector pushed as numbers (no model), HNSW, 8-d."""
    return {
        "fields": [{"field_name": "id", "field_type": "INT64"}, {"field_name": "cate_id", "field_type": "INT64"},
                   {"field_name": "vector", "field_type": "FLOAT", "multi_value": True}],
        "indexs": [{"index_name": "id", "index_type": "PRIMARYKEY64", "index_fields": "id"},
                   {"index_name": "vector", "index_type": "CUSTOMIZED", "indexer": "aitheta2_indexer",
                    "index_fields": [{"field_name": "id"}, {"field_name": "vector"}],
                    "parameters": {"dimension": str(DIM), "distance_type": "SquaredEuclidean",
                                   "vector_index_type": "HNSW", "embedding_delimiter": ","}}],
    }


def vector_of(pk: int) -> list[float]:
    return [round(float(x), 6) for x in np.random.default_rng(pk).standard_normal(DIM)]


def adds(pks) -> list[dict]:
    return [{"cmd": "add", "fields": {"id": pk, "cate_id": pk % 7, "vector": ",".join(map(str, vector_of(pk)))}}
            for pk in pks]


def nearest(http: httpx.Client, table: str, pk: int) -> httpx.Response:
    vec = ",".join(map(str, vector_of(pk)))
    return http.post("/query", json={"assemblyQuery": f"config=hit:3,format:json&&query={table}:'{vec}&n=3'"
                                                      "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK"})


def is_ha_error(r: httpx.Response, status: int) -> bool:
    body = r.json()
    return r.status_code == status and body.get("errors") and all("message" in e for e in body["errors"])


def all_found(http: httpx.Client, table: str, pks: list[int]) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(pks), 500):
        r = http.post("/vector-service/fetch", json={"tableName": table, "ids": [str(p) for p in pks[start:start + 500]]})
        assert r.status_code == 200, r.text
        found |= {int(h["id"]) for h in r.json()["result"]}
    return found


def test_a_node_killed_under_load_loses_no_acknowledged_push_and_answers_no_partial_result(cluster, service):
    base, http, names, runtime = service
    table = names["load"]
    anchors = list(range(1, 61))  # on every shard: each search asks for one, which must come back first
    r = http.post(f"/update/{table}/actions/bulk", json=adds(anchors))
    assert r.status_code == 200, r.text
    runtime.engine.count(table)  # (warms the client)
    httpx.post(f"http://127.0.0.1:{PORT}/_refresh")

    acked: list[int] = []
    push_failures: list[httpx.Response] = []
    searches: list[tuple[int, bool]] = []  # (status, anchor first when 200)
    search_failures: list[httpx.Response] = []
    stop = threading.Event()

    def pusher(worker: int) -> None:
        with httpx.Client(base_url=base, headers=basic(ADMIN), timeout=120) as client:
            batch = 0
            while not stop.is_set():
                pks = [100_000 * (worker + 1) + batch * 20 + i for i in range(20)]
                batch += 1
                resp = client.post(f"/update/{table}/actions/bulk", json=adds(pks))
                if resp.status_code == 200:
                    acked.extend(pks)
                else:
                    push_failures.append(resp)

    def searcher(worker: int) -> None:
        with httpx.Client(base_url=base, headers=basic(ADMIN), timeout=120) as client:
            i = worker
            while not stop.is_set():
                pk = anchors[i % len(anchors)]
                i += 2
                resp = nearest(client, table, pk)
                if resp.status_code == 200:
                    items = resp.json()["result"]["items"]
                    searches.append((200, bool(items) and str(items[0]["fields"]["id"]) == str(pk)))
                else:
                    searches.append((resp.status_code, False))
                    search_failures.append(resp)

    threads = [threading.Thread(target=pusher, args=(w,)) for w in range(2)]
    threads += [threading.Thread(target=searcher, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        before_kill = len(acked)
        cluster.kill(1)
        time.sleep(8)
        during = len(acked) - before_kill
    finally:
        stop.set()
        for t in threads:
            t.join()
    cluster.revive(1)
    assert cluster.health("green")["status"] == "green"
    httpx.post(f"http://127.0.0.1:{PORT}/_refresh")

    assert before_kill > 0 and during > 0, "pushes went on while a node was down"
    # Every acknowledged push is there, once.
    assert all_found(http, table, acked) == set(acked)
    assert runtime.engine.count(table) == len(set(acked)) + len(anchors)
    # Every search answered in full, or refused in the client's format: never a short 200.
    assert searches and all(anchor_first for status, anchor_first in searches if status == 200)
    assert all(is_ha_error(r, 503) for r in search_failures), [r.text[:300] for r in search_failures[:3]]
    assert all(r.status_code in (502, 503) for r in push_failures), [r.text[:300] for r in push_failures[:3]]


def test_a_red_cluster_answers_503_and_health_degraded_then_recovers(cluster, service):
    base, http, names, _ = service
    table = names["red"]  # 3 shards, no replicas: two nodes down lose two shards' documents
    assert http.post(f"/update/{table}/actions/bulk", json=adds(range(1, 31))).status_code == 200
    httpx.post(f"http://127.0.0.1:{PORT}/_refresh")
    assert http.get("/health").json()["status"] == "ok"
    try:
        cluster.kill(1)
        cluster.kill(2)
        r = nearest(http, table, 5)
        assert is_ha_error(r, 503), r.text  # missing shards, or no node answering: said, not hidden
        assert "OpenSearch" in r.json()["errors"][0]["message"] or "shard" in r.json()["errors"][0]["message"]
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert health.json()["cluster"]["status"] == "red"
    finally:
        cluster.revive(1)
        cluster.revive(2)
    assert cluster.health("green")["status"] == "green"
    r = nearest(http, table, 5)
    assert r.status_code == 200 and str(r.json()["result"]["items"][0]["fields"]["id"]) == "5"
    assert http.get("/health").json()["status"] == "ok"


def test_a_rebuild_while_a_node_is_down_finishes_and_the_old_generation_serves_until_the_switch(
        cluster, service, tmp_path):
    from adapter.ingest.pipeline import PipelineConfig
    from adapter.ingest.rebuild import rebuild

    base, http, names, runtime = service
    table = names["rebuilt"]
    assert http.post(f"/update/{table}/actions/bulk", json=adds(range(1, 21))).status_code == 200
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": pk, "cate_id": pk % 7, "vector": ",".join(map(str, vector_of(pk)))})
                            + "\n" for pk in range(1001, 1101)))
    (tmp_path / "schema.json").write_text(json.dumps(vector_schema()))
    pipeline = PipelineConfig.from_dict({"table": table, "schema": "schema.json", "batch_size": 25,
                                         "source": {"table": {"path": rows.name}}, "checkpoint_dir": "state"},
                                        base_dir=tmp_path)
    try:
        cluster.kill(2)
        old = nearest(http, table, 7)  # the live generation, complete on the two nodes left
        assert old.status_code == 200 and str(old.json()["result"]["items"][0]["fields"]["id"]) == "7"
        report = rebuild(runtime, pipeline, progress="none")
    finally:
        cluster.revive(2)
    assert report.switched and report.indexed == 100 and report.failed == 0
    assert cluster.health("green")["status"] == "green"
    r = nearest(http, table, 1042)
    assert r.status_code == 200 and str(r.json()["result"]["items"][0]["fields"]["id"]) == "1042"
    assert all_found(http, table, list(range(1, 21))) == set()  # the old generation is gone
    stats = http.post("/vector-service/stats", json={"tableName": table}).json()["result"]
    assert stats["totalDocCount"] == 100 and (stats["shards"], stats["replicas"]) == (3, 1)
    view = http.get(f"{TABLES}/{table}").json()["result"]  # the rebuilt index kept the table's shape
    assert (view["partitionCount"], view["replicaCount"], view["docCount"]) == (3, 1, 100)
    [ui] = [t for t in http.get("/ui/api/tables").json()["tables"] if t["name"] == table]
    assert (ui["shards"], ui["replicas"]) == (3, 1)
