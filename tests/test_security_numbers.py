"""Numbers that reach the vector index (issue 25, findings 0 and 7): every vector must be
finite with a bounded norm, every score finite and within float32, wherever it enters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _server_support import ADMIN, basic, seed_schema, service_client

ROOT = Path(__file__).resolve().parents[1]
TABLES = "/openapi/ha3/instances/ha3-adapter/tables"

QC_TRAINING_CHILD = r"""
import json, sys, tempfile
import numpy as np
from adapter.engines.embedded import EmbeddedEngine
from adapter.ingest.push import apply_push
from adapter.ingest.parts import IngestParts
from adapter.schema import parse_schema

schema = json.loads(sys.argv[1])
engine = EmbeddedEngine(tempfile.mkdtemp())
engine.create_table(parse_schema(schema, "qc"))
rng = np.random.default_rng(0)
commands = [{"cmd": "add", "fields": {"id": i, "cate_id": 1, "vector": rng.random(512).tolist()}} for i in range(70)]
commands[5]["fields"]["vector"] = [3e38] * 512  # finite in float32, its square is not
report = apply_push(IngestParts(engine, None), "qc", commands)  # crosses linear_build_threshold: trains IVF
print(json.dumps({"failures": [f.to_dict() for f in report.failures], "stats": engine.stats("qc").extra}))
"""


def _qc_schema(threshold: int) -> dict:
    schema = seed_schema()
    for index in schema["indexs"]:
        if index["index_type"] == "CUSTOMIZED":
            index["parameters"].update(vector_index_type="Qc", linear_build_threshold=str(threshold))
    return schema


def test_huge_pushed_vector_cannot_abort_qc_training():
    """Finding 0: a 3e38 vector crossing linear_build_threshold made faiss abort the process."""
    child = subprocess.run([sys.executable, "-c", QC_TRAINING_CHILD, json.dumps(_qc_schema(60))],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert child.returncode == 0, child.stderr[-2000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert [(f["pk"], f["reason"]) for f in out["failures"]] == [(5, "bad_vector")]
    assert "norm" in out["failures"][0]["message"]
    assert out["stats"]["trained"] and out["stats"]["indexed"] == 69


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with service_client(tmp_path_factory.mktemp("numbers"), table="nums") as c:
        yield c


def _push(client, docs):
    return client.post("/update/nums/actions/bulk", headers=basic(ADMIN),
                       json=[{"cmd": "add", "fields": {"id": pk, "cate_id": 1, "vector": vec}} for pk, vec in docs])


def test_stored_vectors_keep_every_score_finite(client):
    """Finding 7: a stored 3e38 vector made later queries answer 500 (an infinite score)."""
    r = _push(client, [(1, [3e38] * 512), (2, [1e39] + [0.0] * 511), (3, [0.1] * 512)])
    assert r.status_code == 400, r.text
    failed = {e["pk"]: e["message"] for e in r.json()["errors"]}
    assert set(failed) == {1, 2} and all("vector" in m for m in failed.values())
    edge = 1e18 / np.sqrt(512) * 0.999999  # the largest norm the rule admits, both signs
    assert _push(client, [(4, [edge] * 512)]).status_code == 200
    for body in ({"tableName": "nums", "vector": [-edge] * 512, "topK": 5},
                 {"tableName": "nums", "vector": [0.1] * 512, "topK": 5}):
        r = client.post("/vector-service/query", headers=basic(ADMIN), json=body)
        assert r.status_code == 200, r.text
        scores = [h["score"] for h in r.json()["result"]]
        assert sorted(h["id"] for h in r.json()["result"]) == [3, 4]
        assert all(np.isfinite(s) for s in scores)


@pytest.mark.parametrize("body, where", [
    ({"vector": [1e38] * 512}, "$.vector"),
    ({"vector": [1e39] + [0.0] * 511}, "$.vector"),
    ({"vector": [0.1] * 512, "scoreThreshold": 1e39}, "scoreThreshold"),
])
def test_query_numbers_out_of_range_get_400(client, body, where):
    r = client.post("/vector-service/query", headers=basic(ADMIN), json={"tableName": "nums", "topK": 3, **body})
    assert r.status_code == 400, r.text
    assert where in r.json()["errorMsg"]


def test_ha_query_vector_and_sf_out_of_range_get_400(client):
    huge = ",".join(["1e38"] * 512)
    for query in (f"config=hit:2&&query=vector:'{huge}'&&cluster=nums",
                  f"config=hit:2&&query=vector:'{','.join(['0.1'] * 512)}&sf=1e39'&&cluster=nums"):
        r = client.get("/query", params={"query": query}, headers=basic(ADMIN))
        assert r.status_code == 400, r.text
        assert "query offset" in r.json()["errors"][0]["message"]
