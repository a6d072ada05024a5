"""The service on a real OpenSearch node (scripts/opensearch.sh), beside the embedded engine.

Two services with the same tiny CLIP: one on the embedded engine, one on the node. The same
HA3 schemas, the same pushed photos and the same HA queries and vector-service requests go
to both; the answers must agree (ids in order, proxima scores to 1e-4 relative), and the
node's own state (indexes, aliases, mappings) is read back with opensearch-py.

The node's k-NN plugin (Maven Central) has no native faiss code, so it declares
``node.attr.knn_library: lucene`` and the adapter builds Lucene HNSW graphs there; what only
faiss can do (IVF training) is covered by request captures in test_opensearch_requests.py.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.request import Request, urlopen

import httpx
import pytest
from fastapi.testclient import TestClient

from _opensearch_support import engine_config, raw_client, require_opensearch, unique
from _server_support import ADMIN, MAPPINGS, basic, live_server, make_settings
from ingest_fixtures import photo_paths

pytestmark = pytest.mark.opensearch

INSTANCE = "ha3-adapter"
TABLES = f"/openapi/ha3/instances/{INSTANCE}/tables"
N_PHOTOS = 40
CATES = 4
# Schemas whose source field takes Base64 images: what push and rebuild can feed here.
FED = {"qc_l2": "image_search_base64.json", "hnsw_ip": "image_search_hnsw_ip.json",
       "linear_l2": "image_search_linear.json"}


@pytest.fixture(scope="module")
def photos():
    return [base64.b64encode(p.read_bytes()).decode() for p in photo_paths("fashion-10k", N_PHOTOS)]


def documents(photos, ids=None):
    ids = ids or range(1, len(photos) + 1)
    return [{"cmd": "add", "fields": {"id": i, "cate_id": 1 + i % CATES, "vector_source_image": photos[i - 1]}}
            for i in ids]


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """{"embedded": client, "opensearch": client}; OpenSearch tables made here are dropped after."""
    require_opensearch()
    from adapter.embed.testing import make_tiny_clip
    from adapter.runtime import Runtime
    from adapter.server.app import create_app

    clip = make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", dim=512)
    with ExitStack() as stack:
        clients = {}
        for kind in ("embedded", "opensearch"):
            extra = {"engine": engine_config()} if kind == "opensearch" else {}
            # products_all_types.json keeps its images in a MinIO bucket at this endpoint
            extra["access"] = {"object_store_endpoints": ["127.0.0.1:9000"]}
            runtime = Runtime.from_settings(make_settings(tmp_path_factory.mktemp(kind), clip, **extra))
            stack.callback(runtime.close)
            client = stack.enter_context(TestClient(create_app(runtime), raise_server_exceptions=False))
            client.runtime = runtime
            clients[kind] = client
        yield clients
        os_client = clients["opensearch"]
        for table in os_client.runtime.engine.list_tables():
            if table.startswith(("live_", "made_", "rb_")):
                os_client.delete(f"{TABLES}/{table}", headers=basic(ADMIN))


def create(client, name: str, schema_file: str) -> None:
    schema = json.loads((MAPPINGS / schema_file).read_text())
    r = client.post(TABLES, headers=basic(ADMIN), json={"name": name, "schema": schema})
    assert r.status_code == 200, r.text


def push(client, table: str, body: list[dict]) -> dict:
    r = client.post(f"/update/{table}/actions/bulk", headers=basic(ADMIN), json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def loaded(stacks, photos):
    """The same tables (one per index type) with the same photos on both engines."""
    names = {}
    for key, schema_file in FED.items():
        name = unique(f"live_{key}")
        for client in stacks.values():
            create(client, name, schema_file)
            assert push(client, name, documents(photos))["written"] == N_PHOTOS
        names[key] = name
    return names


def ha(client, query: str) -> dict:
    r = client.post("/query", headers=basic(ADMIN), json={"assemblyQuery": query})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["errors"] == [], body["errors"]
    return body["result"]


def vs(client, endpoint: str, body: dict) -> dict:
    r = client.post(f"/vector-service/{endpoint}", headers=basic(ADMIN), json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["errorCode"] == 0, out
    return out


def ranked(result: dict) -> tuple[list[str], list[float]]:
    items = result["items"]
    return [str(i["fields"]["id"]) for i in items], [float(i["sortExprValues"][0]) for i in items]


# OpenSearch scores in float32 (_score = 1 + ip, or 1 / (1 + d)): an inner product near 0
# carries about 1e-7 of absolute error, which no relative tolerance covers.
SCORE_ABS = 1e-6


def assert_same_ranking(a: tuple[list[str], list[float]], b: tuple[list[str], list[float]]) -> None:
    assert a[0] == b[0]
    assert a[1] == pytest.approx(b[1], rel=1e-4, abs=SCORE_ABS)


def b64_text(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- tables ---------------------------------------------------------------------------------

def lucene_hnsw(space: str, m: int, ef_construction: int, **extra) -> dict:
    return {"type": "knn_vector", "dimension": 512,
            "method": {"name": "hnsw", "engine": "lucene", "space_type": space,
                       "parameters": {"m": m, "ef_construction": ef_construction, **extra}}}


# The vector field each schema must get on a node without native k-NN code, worked out from
# the schema files by hand: Qc has no Lucene counterpart, so OpenSearch's HNSW defaults (m 16,
# ef_construction 100); HNSW and QGraph take m = max_neighbor_count / 2 and efconstruction;
# QGraph's Int8 quantizer becomes Lucene's scalar quantizer (the node fills in its defaults).
VECTOR_FIELDS = {
    "image_search_base64.json": ("vector", lucene_hnsw("l2", 16, 100)),
    "image_search_oss.json": ("vector", lucene_hnsw("l2", 16, 100)),
    "image_search_hnsw_ip.json": ("vector", lucene_hnsw("innerproduct", 32, 400)),
    "image_search_linear.json": ("vector", {"type": "knn_vector", "dimension": 512}),
    "products_all_types.json": ("embedding", lucene_hnsw("l2", 24, 300, encoder={"name": "sq", "parameters": {}})),
}


def test_every_mapping_schema_is_listed_here():
    assert sorted(VECTOR_FIELDS) == sorted(p.name for p in MAPPINGS.glob("*.json"))


@pytest.mark.parametrize("schema_file", sorted(VECTOR_FIELDS))
def test_every_mapping_schema_becomes_an_index_and_delete_removes_it(stacks, schema_file):
    client, node = stacks["opensearch"], raw_client()
    name = unique("made")
    create(client, name, schema_file)
    aliases = node.indices.get_alias(name=name)
    assert list(aliases) == [f"{name}__g1"]
    index = node.indices.get(index=name)[f"{name}__g1"]
    mapping = index["mappings"]
    vector_field, expected = VECTOR_FIELDS[schema_file]
    assert mapping["properties"][vector_field] == expected
    assert index["settings"]["index"]["knn"] == ("false" if schema_file == "image_search_linear.json" else "true")
    assert mapping["dynamic"] == "strict"
    # Credentials of object-store fields stay out of the cluster.
    raw_schema = (MAPPINGS / schema_file).read_text()
    for secret_key in ("oss_access_key", "oss_secret"):
        for value in _values_of(json.loads(raw_schema), secret_key):
            assert value not in json.dumps(mapping)
    r = client.delete(f"{TABLES}/{name}", headers=basic(ADMIN))
    assert r.status_code == 200, r.text
    assert not node.indices.exists_alias(name=name)
    assert not node.indices.exists(index=f"{name}__g1")


def _values_of(data, key):
    if isinstance(data, dict):
        for k, v in data.items():
            if k == key and isinstance(v, str) and v:
                yield v
            else:
                yield from _values_of(v, key)
    elif isinstance(data, list):
        for item in data:
            yield from _values_of(item, key)


def test_pushed_adds_and_deletes_are_seen_after_refresh(stacks, photos):
    client = stacks["opensearch"]
    name = unique("live_push")
    create(client, name, FED["hnsw_ip"])
    assert push(client, name, documents(photos, [1, 2, 3]))["written"] == 3
    stats = vs(client, "stats", {"tableName": name})["result"]
    assert stats["totalDocCount"] == 3 and stats["indexType"] == "HNSW"
    # add replaces by primary key; delete removes; deleting a missing key succeeds
    replaced = documents(photos, [3])[0]
    replaced["fields"]["cate_id"] = 42
    body = [replaced, {"cmd": "delete", "fields": {"id": 1}}, {"cmd": "delete", "fields": {"id": 999}}]
    push(client, name, body)
    fetched = vs(client, "fetch", {"tableName": name, "ids": ["1", "2", "3"], "outputFields": ["cate_id"]})
    assert {str(h["id"]): h["fields"]["cate_id"] for h in fetched["result"]} == {"2": 1 + 2 % CATES, "3": 42}
    assert vs(client, "stats", {"tableName": name})["result"]["totalDocCount"] == 2


# -- queries: the node answers as the embedded engine does -----------------------------------

def ha_queries(index: str, photo: str) -> list[str]:
    text = b64_text("a blue shirt")
    knn = f"query={index}:'{{payload}}&n={{n}}'"
    return [
        f"config=hit:10,format:json&&{knn.format(payload=text + '&modal=text', n=10)}",
        f"config=hit:10,format:json&&{knn.format(payload=photo + '&modal=image', n=10)}"
        "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK",
        f"config=hit:10,format:json&&{knn.format(payload=text + '&modal=text', n=10)}&&filter=cate_id=2",
        f"config=hit:10,format:json&&{knn.format(payload=text + '&modal=text', n=20)}"
        "&&filter=cate_id>1 AND cate_id<4",
        f"config=hit:10,format:json&&{knn.format(payload=text + '&modal=text', n=20)}"
        "&&filter=in(cate_id, \"1|3\")",
        f"config=start:3,hit:4,format:json&&{knn.format(payload=text + '&modal=text', n=10)}",
        f"config=hit:10,format:json&&{knn.format(payload=text + '&modal=text', n=5)}&&sort=-RANK",
    ]


@pytest.mark.parametrize("table_key", sorted(FED))
def test_ha_queries_answer_as_the_embedded_engine_does(stacks, loaded, photos, table_key):
    name = loaded[table_key]
    for query in ha_queries(name, photos[6]):
        got = {kind: ha(client, query) for kind, client in stacks.items()}
        assert got["opensearch"]["totalHits"] == got["embedded"]["totalHits"], query[:80]
        assert_same_ranking(ranked(got["opensearch"]), ranked(got["embedded"]))
    if table_key != "hnsw_ip":  # (inner product: a photo need not be its own best match)
        # The photo itself comes back first, at squared L2 distance 0.
        ids, scores = ranked(ha(stacks["opensearch"], ha_queries(name, photos[6])[1]))
        assert ids[0] == "7" and scores[0] == pytest.approx(0.0, abs=1e-4)


def test_score_threshold_keeps_exactly_the_documents_within_it(stacks, loaded):
    name = loaded["qc_l2"]
    text = b64_text("a blue shirt")
    base = f"config=hit:40,format:json&&query={name}:'{text}&modal=text&n=40'"
    ids, scores = ranked(ha(stacks["opensearch"], base))
    # Halfway between the 12th and 13th distances: a threshold equal to one document's own
    # distance would hang on float32 rounding, which differs between the two engines.
    sf = (scores[11] + scores[12]) / 2
    ids_sf, scores_sf = ranked(ha(stacks["opensearch"], base.replace("&n=40'", f"&n=40&sf={sf!r}'")))
    assert ids_sf == ids[:12] and max(scores_sf) <= sf * (1 + 1e-6)
    embedded = ranked(ha(stacks["embedded"], base.replace("&n=40'", f"&n=40&sf={sf!r}'")))
    assert_same_ranking((ids_sf, scores_sf), embedded)


def test_vector_service_requests_answer_as_the_embedded_engine_does(stacks, loaded, photos):
    name = loaded["hnsw_ip"]
    requests = [
        ("inference-query", {"tableName": name, "content": "a red dress", "modal": "text", "topK": 8,
                             "outputFields": ["cate_id"]}),
        ("inference-query", {"tableName": name, "content": photos[3], "modal": "image", "topK": 5,
                             "filter": "cate_id!=1", "outputFields": ["cate_id", "id"]}),
        ("inference-query", {"tableName": name, "content": "shoes", "modal": "text", "topK": 40,
                             "scoreThreshold": 0.0}),
        ("fetch", {"tableName": name, "ids": ["5", "6", "404"], "outputFields": ["cate_id"]}),
        ("fetch", {"tableName": name, "filter": "cate_id=3", "sort": "-id", "limit": 4, "offset": 1,
                   "outputFields": ["cate_id"]}),
        ("aggregate", {"tableName": name, "groupKeys": ["cate_id"],
                       "aggFuncs": [{"name": "n", "func": "count", "args": ["*"]},
                                    {"name": "top", "func": "max", "args": ["id"]}]}),
    ]
    for endpoint, body in requests:
        got = {kind: vs(client, endpoint, body) for kind, client in stacks.items()}
        os_rows, emb_rows = got["opensearch"]["result"], got["embedded"]["result"]
        assert [str(r.get("id")) for r in os_rows] == [str(r.get("id")) for r in emb_rows], (endpoint, body)
        assert [r.get("fields") for r in os_rows] == [r.get("fields") for r in emb_rows]
        if endpoint == "aggregate":
            assert sorted(map(json.dumps, os_rows)) == sorted(map(json.dumps, emb_rows))
            assert sum(r["n"] for r in os_rows) == N_PHOTOS
        elif endpoint != "fetch":
            assert [r["score"] for r in os_rows] == pytest.approx([r["score"] for r in emb_rows], rel=1e-4, abs=SCORE_ABS)
    assert got["opensearch"]["totalCount"] == got["embedded"]["totalCount"]
    stats = vs(stacks["opensearch"], "stats", {"tableName": name})["result"]
    assert stats["totalDocCount"] == N_PHOTOS and stats["knn_library"] == "lucene"


# -- rebuild: a new index behind the alias, searches never failing ---------------------------

def test_rebuild_switches_the_alias_with_no_failed_search(stacks, photos, tmp_path):
    from adapter.ingest.pipeline import PipelineConfig
    from adapter.ingest.rebuild import rebuild

    runtime, node = stacks["opensearch"].runtime, raw_client()
    name = unique("rb")
    create(stacks["opensearch"], name, FED["hnsw_ip"])
    push(stacks["opensearch"], name, documents(photos, range(1, 11)))
    rows = tmp_path / "items.jsonl"
    rows.write_text("".join(json.dumps(d["fields"]) + "\n" for d in documents(photos)))
    pipeline = PipelineConfig.from_dict(
        {"table": name, "schema": str(MAPPINGS / FED["hnsw_ip"]), "batch_size": 8,
         "source": {"table": {"path": rows.name}, "image": {"kind": "base64"}}, "checkpoint_dir": "state"},
        base_dir=tmp_path)
    query = f"config=hit:5,format:json&&query={name}:'{b64_text('a shirt')}&modal=text&n=5'"
    outcomes: list[tuple[int, int]] = []  # (HTTP status, numHits) of every search
    stop = threading.Event()
    with live_server(runtime) as base:
        def searcher():
            with httpx.Client(base_url=base, headers=basic(ADMIN), timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/query", json={"assemblyQuery": query})
                    body = r.json()
                    ok = r.status_code == 200 and body.get("errors") == []
                    outcomes.append((r.status_code if ok else -r.status_code, body.get("result", {}).get("numHits", 0)))

        threads = [threading.Thread(target=searcher) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            while len(outcomes) < 5:  # searches are running before the rebuild starts
                time.sleep(0.05)
            reports = [rebuild(runtime, pipeline, progress="none") for _ in range(2)]
            before_stop = len(outcomes)
            while len(outcomes) < before_stop + 5:  # and after the last switch
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert all(r.switched and r.indexed == N_PHOTOS for r in reports)
    assert outcomes and all(status == 200 and hits == 5 for status, hits in outcomes), \
        [o for o in outcomes if o != (200, 5)][:5]
    # Two rebuilds: g1 -> g2 -> g3, each old index deleted after its switch.
    assert list(node.indices.get_alias(name=name)) == [f"{name}__g3"]
    assert not node.indices.exists(index=f"{name}__g1") and not node.indices.exists(index=f"{name}__g2")
    assert vs(stacks["opensearch"], "stats", {"tableName": name})["result"]["totalDocCount"] == N_PHOTOS


# -- Basic auth to the cluster ---------------------------------------------------------------

class AuthProxy:
    """A loopback reverse proxy that demands Basic auth, as a secured cluster's front does,
    and forwards what it admits to the real node. It records the headers it saw."""

    def __init__(self, upstream: str, user: str, password: str):
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        seen: list[str | None] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                auth = self.headers.get("Authorization")
                seen.append(auth)
                if auth != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="cluster"')
                    self.send_header("Content-Type", "application/json")
                    body = b'{"error":{"type":"security_exception","reason":"missing credentials"},"status":401}'
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                request = Request(upstream + self.path, data=data, method=self.command, headers=headers)
                try:
                    with urlopen(request, timeout=30) as resp:
                        status, payload, ctype = resp.status, resp.read(), resp.headers.get("Content-Type")
                except Exception as exc:  # an HTTPError carries the node's own status and body
                    status, payload = getattr(exc, "code", 502), exc.read() if hasattr(exc, "read") else b""
                    ctype = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_basic_auth_is_sent_to_the_cluster_when_configured():
    from adapter.engines.factory import EngineConfig, open_engine
    from adapter.errors import EngineError

    upstream = require_opensearch().split(",")[0]
    proxy = AuthProxy(upstream, "cluster-user", "cluster-pass")
    try:
        engine = open_engine(EngineConfig(kind="opensearch", url=proxy.url, username="cluster-user",
                                          password="cluster-pass"))
        assert engine.knn_library == "lucene"  # read from the node, through the proxy
        engine.list_tables()
        assert proxy.seen and all(h == proxy.seen[0] for h in proxy.seen)
        anonymous = open_engine(EngineConfig(kind="opensearch", url=proxy.url, knn_library="lucene"))
        with pytest.raises(EngineError, match="security_exception"):
            anonymous.list_tables()
        assert proxy.seen[-1] is None
    finally:
        proxy.close()
