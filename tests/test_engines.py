"""One behaviour suite for both engines (embedded always; OpenSearch when OPENSEARCH_URL is set).

Scores are checked against a numpy brute force on the same vectors, in proxima_score
semantics: squared L2 ascending, inner product descending.
"""

from __future__ import annotations

import os
import threading
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import pytest

from _opensearch_support import require_opensearch
from adapter.plan.records import Document
from adapter.errors import ConflictError, NotFoundError, QueryError
from adapter.plan.tree import (
    AggFunc, AggregatePlan, And, Compare, FetchPlan, InList, Not, Or, RANK, SearchParams, SearchPlan, SortKey,
)
from adapter.schema.model import (
    DistanceType, FieldSpec, FieldType, HnswParams, QcParams, TableSpec, VectorIndexSpec, VectorIndexType,
)

DIM = 16
N = 300
CATES = 5


def make_spec(name: str, index_type=VectorIndexType.HNSW, distance=DistanceType.SQUARED_EUCLIDEAN,
              dim: int = DIM) -> TableSpec:
    return TableSpec(
        name=name,
        primary_key="id",
        fields=[
            FieldSpec(name="id", type=FieldType.INT64),
            FieldSpec(name="cate_id", type=FieldType.INT64),
            FieldSpec(name="price", type=FieldType.DOUBLE),
            FieldSpec(name="title", type=FieldType.STRING),
            FieldSpec(name="tags", type=FieldType.STRING, multi_value=True),
            FieldSpec(name="vector", type=FieldType.FLOAT, multi_value=True),
        ],
        vector_index=VectorIndexSpec(
            name="vector", pk_field="id", vector_field="vector", dimension=dim, distance=distance,
            index_type=index_type,
            hnsw=HnswParams(max_neighbor_count=32, ef_construction=64, ef_search=64)
            if index_type is VectorIndexType.HNSW else None,
            qc=QcParams(centroid_count=4, scan_ratio=0.5) if index_type is VectorIndexType.QC else None,
        ),
    )


def make_docs(n: int = N, seed: int = 0) -> tuple[list[Document], np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    docs = [Document(pk=i, fields={"cate_id": i % CATES, "price": float(i) / 10, "title": f"item-{i}",
                                   "tags": ["even" if i % 2 == 0 else "odd", f"t{i % 3}"]}, vector=vecs[i])
            for i in range(n)]
    return docs, vecs


def brute(vecs: np.ndarray, q: np.ndarray, distance: DistanceType, mask: np.ndarray | None = None):
    """(ids, scores) best first, over rows where mask is true."""
    ids = np.arange(len(vecs)) if mask is None else np.nonzero(mask)[0]
    if distance is DistanceType.INNER_PRODUCT:
        scores = vecs[ids] @ q
        order = np.argsort(-scores, kind="stable")
    else:
        scores = ((vecs[ids] - q) ** 2).sum(1)
        order = np.argsort(scores, kind="stable")
    return ids[order], scores[order]


# -- engine fixtures ---------------------------------------------------------------------

ENGINES = ["embedded", pytest.param("opensearch", marks=pytest.mark.opensearch)]


class EngineBox:
    """Opens (and re-opens, for restart tests) one engine of a kind."""

    def __init__(self, kind: str, tmp_path):
        self.kind, self.tmp_path = kind, tmp_path
        self.engine = self.open()

    def open(self):
        if self.kind == "embedded":
            from adapter.engines.embedded import EmbeddedEngine

            return EmbeddedEngine(self.tmp_path / "data")
        from adapter.engines.opensearch import OpenSearchEngine

        return OpenSearchEngine(url=os.environ["OPENSEARCH_URL"], refresh=True)

    def reopen(self):
        self.engine.close()
        self.engine = self.open()
        return self.engine

    def table(self, base: str) -> str:
        # OpenSearch is shared between runs: unique, lowercase names.
        return f"{base}_{uuid.uuid4().hex[:8]}" if self.kind == "opensearch" else base


@pytest.fixture(params=ENGINES)
def box(request, tmp_path):
    if request.param == "opensearch":
        require_opensearch()
    b = EngineBox(request.param, tmp_path)
    made: list[str] = []
    b.made = made
    yield b
    for t in made:
        try:
            b.engine.drop_table(t)
        except NotFoundError:
            pass
    b.engine.close()


def new_table(box, base="items", **kw) -> tuple[str, TableSpec]:
    name = box.table(base)
    spec = make_spec(name, **kw)
    box.engine.create_table(spec)
    box.made.append(name)
    return name, spec


def loaded(box, base="items", n=N, **kw):
    name, spec = new_table(box, base, **kw)
    docs, vecs = make_docs(n)
    if spec.vector_index.index_type is VectorIndexType.QC:
        box.engine.train(name, vecs)
    result = box.engine.upsert(name, docs)
    assert result.written == n and not result.failures
    return name, spec, docs, vecs


def knn(table, vec, k=10, **kw) -> SearchPlan:
    kw.setdefault("hit", k)
    return SearchPlan(table=table, vectors=[list(map(float, vec))], k=k, **kw)


# -- tests ---------------------------------------------------------------------------------

def test_qc_training_below_linear_build_threshold_leaves_the_table_exact(box):
    """A rebuild says how many documents are coming; below linear_build_threshold (5000 here)
    training is skipped, as HA3 brute-forces small tables, and searches stay exact."""
    name, spec = new_table(box, index_type=VectorIndexType.QC)
    docs, vecs = make_docs(60)
    box.engine.train(name, vecs[:30], doc_count=60)
    assert box.engine.upsert(name, docs).written == 60
    stats = box.engine.stats(name)
    # (A Lucene graph stands in for IVF where the k-NN plugin has no native code: nothing to train.)
    assert stats.extra["trained"] is False or stats.extra.get("knn_library") == "lucene"
    q = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    res = box.engine.search(knn(name, q, k=10))  # no exact flag: the engine's own choice
    ids, scores = brute(vecs, q, spec.distance)
    assert [h.pk for h in res.hits] == list(ids[:10])


@pytest.mark.parametrize("distance", list(DistanceType))
@pytest.mark.parametrize("index_type", [VectorIndexType.HNSW, VectorIndexType.LINEAR, VectorIndexType.QC])
def test_scores_and_order_match_numpy_brute_force(box, distance, index_type):
    name, spec, docs, vecs = loaded(box, distance=distance, index_type=index_type)
    rng = np.random.default_rng(7)
    for _ in range(3):
        q = rng.standard_normal(DIM).astype(np.float32)
        exact = index_type is not VectorIndexType.HNSW
        plan = knn(name, q, k=10, search_params=SearchParams(exact=True) if exact else SearchParams(ef_search=200))
        res = box.engine.search(plan)
        ids, scores = brute(vecs, q, distance)
        assert [h.pk for h in res.hits] == list(ids[:10])
        np.testing.assert_allclose([h.score for h in res.hits], scores[:10], rtol=1e-4, atol=1e-4)


def test_qc_ivf_index_returns_scores_close_to_exact(box):
    name, spec, docs, vecs = loaded(box, index_type=VectorIndexType.QC)
    q = vecs[3] + 0.01
    res = box.engine.search(knn(name, q, k=5, search_params=SearchParams(nprobes=4)))
    ids, scores = brute(vecs, q, DistanceType.SQUARED_EUCLIDEAN)
    assert res.hits[0].pk == 3
    # 8-bit codes: scores are approximations of the exact squared L2.
    np.testing.assert_allclose([h.score for h in res.hits], scores[:5], atol=0.05)


def test_upsert_replaces_by_key_and_delete_removes(box):
    name, spec, docs, vecs = loaded(box)
    e = box.engine
    moved = -vecs[0]
    e.upsert(name, [Document(pk=0, fields={"cate_id": 99, "title": "moved"}, vector=moved)])
    assert e.count(name) == N
    [hit] = e.get(name, [0], output_fields=["cate_id", "title"])
    assert hit.fields == {"cate_id": 99, "title": "moved"}
    res = e.search(knn(name, moved, k=3))
    assert [h.pk for h in res.hits].count(0) == 1 and res.hits[0].pk == 0
    assert res.hits[0].score == pytest.approx(0.0, abs=1e-5)
    assert e.delete(name, [0, 1, 12345]).failures == []
    assert e.count(name) == N - 2
    assert e.get(name, [0, 1, 2]) and [h.pk for h in e.get(name, [0, 1, 2])] == [2]
    res = e.search(knn(name, moved, k=N))
    assert {0, 1}.isdisjoint(h.pk for h in res.hits)
    assert len(res.hits) == N - 2


def test_bad_documents_fail_alone_with_their_key(box):
    name, spec = new_table(box)
    docs, vecs = make_docs(3)
    bad_dim = Document(pk=10, fields={}, vector=np.zeros(DIM + 1, dtype=np.float32))
    bad_type = Document(pk=11, fields={"cate_id": "not-a-number"}, vector=vecs[0])
    res = box.engine.upsert(name, [docs[0], bad_dim, docs[1], bad_type, docs[2]])
    assert res.written == 3
    assert {f.pk for f in res.failures} == {10, 11}
    assert any("cate_id" in f.reason for f in res.failures)
    assert box.engine.count(name) == 3


FILTERS = [
    (Compare(field="cate_id", op="=", value=2), lambda i: i % CATES == 2),
    (Compare(field="cate_id", op="!=", value=2), lambda i: i % CATES != 2),
    (Compare(field="price", op="<", value=5), lambda i: i / 10 < 5),
    (Compare(field="price", op="<=", value=5), lambda i: i / 10 <= 5),
    (Compare(field="price", op=">", value=25), lambda i: i / 10 > 25),
    (Compare(field="price", op=">=", value=25), lambda i: i / 10 >= 25),
    (Compare(field="title", op="=", value="item-7"), lambda i: i == 7),
    (Compare(field="tags", op="=", value="even"), lambda i: i % 2 == 0),
    (InList(field="cate_id", values=[1, 3]), lambda i: i % CATES in (1, 3)),
    (InList(field="cate_id", values=[1, 3], negate=True), lambda i: i % CATES not in (1, 3)),
    (InList(field="tags", values=["t1"], negate=True), lambda i: i % 3 != 1),
    (And(items=[Compare(field="cate_id", op="=", value=1), Compare(field="price", op="<", value=10)]),
     lambda i: i % CATES == 1 and i / 10 < 10),
    (Or(items=[Compare(field="cate_id", op="=", value=1), Compare(field="title", op="=", value="item-2")]),
     lambda i: i % CATES == 1 or i == 2),
    (Not(item=Compare(field="cate_id", op="=", value=0)), lambda i: i % CATES != 0),
]


@pytest.mark.parametrize("expr,pred", FILTERS, ids=lambda x: getattr(x, "kind", "") + str(getattr(x, "op", "")))
def test_filters_select_exactly_the_matching_documents(box, expr, pred):
    name, spec, docs, vecs = loaded(box, base="filt")
    mask = np.array([pred(i) for i in range(N)])
    q = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    res = box.engine.search(knn(name, q, k=20, filter=expr, search_params=SearchParams(exact=True)))
    ids, scores = brute(vecs, q, DistanceType.SQUARED_EUCLIDEAN, mask)
    assert [h.pk for h in res.hits] == list(ids[:20])
    assert box.engine.count(name, expr) == int(mask.sum())


def test_filtered_approximate_search_returns_k_whenever_k_match(box):
    name, spec, docs, vecs = loaded(box, n=3000)
    docs2, vecs2 = make_docs(3000)
    q = -vecs2[5]
    rare = Compare(field="title", op="=", value="item-5")  # the worst possible match for q
    res = box.engine.search(knn(name, q, k=10, filter=rare))
    assert [h.pk for h in res.hits] == [5]
    common = Compare(field="cate_id", op="!=", value=3)  # 2400 matches: filtered inside the ANN search
    res = box.engine.search(knn(name, q, k=50, filter=common))
    assert len(res.hits) == 50 and all(h.pk % CATES != 3 for h in res.hits)
    ids, _ = brute(vecs, q, DistanceType.SQUARED_EUCLIDEAN, np.arange(3000) % CATES != 3)
    assert len(set(ids[:50]) & {h.pk for h in res.hits}) >= 45  # approximate, but close


def test_k_larger_than_matches_and_empty_table(box):
    name, spec = new_table(box)
    q = np.ones(DIM, dtype=np.float32)
    res = box.engine.search(knn(name, q, k=10))
    assert res.hits == [] and res.total == 0
    docs, vecs = make_docs(4)
    box.engine.upsert(name, docs)
    res = box.engine.search(knn(name, q, k=10))
    assert sorted(h.pk for h in res.hits) == [0, 1, 2, 3]


def test_threshold_sort_paging_and_output_fields(box):
    name, spec, docs, vecs = loaded(box)
    e = box.engine
    q = vecs[10]
    ids, scores = brute(vecs, q, DistanceType.SQUARED_EUCLIDEAN)
    sf = float(scores[7])
    res = e.search(knn(name, q, k=20, score_threshold=sf))
    assert [h.pk for h in res.hits] == list(ids[:8]) and res.total == 8
    page = e.search(knn(name, q, k=20, start=5, hit=5))
    assert [h.pk for h in page.hits] == list(ids[5:10]) and page.total == 20
    by_price = e.search(knn(name, q, k=10, sort=[SortKey(field="price", descending=True)],
                            output_fields=["price"], include_vector=True))
    prices = [h.fields["price"] for h in by_price.hits]
    assert prices == sorted(prices, reverse=True) and set(by_price.hits[0].fields) == {"price"}
    assert len(by_price.hits[0].vector) == DIM
    worst_first = e.search(knn(name, q, k=5, sort=[SortKey(field=RANK, descending=True)]))
    assert [h.pk for h in worst_first.hits] == list(ids[:5][::-1])


def test_inner_product_threshold_drops_lower_scores(box):
    name, spec, docs, vecs = loaded(box, distance=DistanceType.INNER_PRODUCT)
    q = vecs[4]
    ids, scores = brute(vecs, q, DistanceType.INNER_PRODUCT)
    res = box.engine.search(knn(name, q, k=20, score_threshold=float(scores[3])))
    assert [h.pk for h in res.hits] == list(ids[:4])


@pytest.mark.parametrize("mode", ["sum", "max", "min"])
def test_several_query_vectors_merge_by_mode(box, mode):
    name, spec, docs, vecs = loaded(box, distance=DistanceType.INNER_PRODUCT)
    q1, q2 = vecs[1], vecs[2]
    plan = SearchPlan(table=name, vectors=[q1.tolist(), q2.tolist()], k=N, hit=N, multi_vector_mode=mode,
                      search_params=SearchParams(exact=True))
    res = box.engine.search(plan)
    s1, s2 = vecs @ q1, vecs @ q2
    expected = {"sum": s1 + s2, "max": np.maximum(s1, s2), "min": np.minimum(s1, s2)}[mode]
    got = {h.pk: h.score for h in res.hits}
    np.testing.assert_allclose([got[i] for i in range(N)], expected, rtol=1e-4, atol=1e-4)
    # The best five in order. Documents 1 and 2 tie exactly (each scores 1 against itself
    # plus the same dot product), so their order is float rounding: compare scores, not ids.
    top5 = [h.pk for h in res.hits][:5]
    np.testing.assert_allclose(expected[top5], np.sort(expected)[::-1][:5], rtol=0, atol=1e-5)


def test_unknown_fields_and_bad_vectors_raise_query_errors_naming_them(box):
    name, spec, docs, vecs = loaded(box, n=20)
    q = vecs[0]
    with pytest.raises(QueryError, match="nope"):
        box.engine.search(knn(name, q, filter=Compare(field="nope", op="=", value=1)))
    with pytest.raises(QueryError, match="ghost"):
        box.engine.search(knn(name, q, output_fields=["ghost"]))
    with pytest.raises(QueryError, match="needs 16"):
        box.engine.search(SearchPlan(table=name, vectors=[[1.0, 2.0]]))
    with pytest.raises(QueryError, match="cate_id"):
        box.engine.search(knn(name, q, filter=Compare(field="cate_id", op="=", value="abc")))
    with pytest.raises(NotFoundError):
        box.engine.search(knn("missing_table", q))


@pytest.mark.parametrize("value,problem", [(np.nan, "NaN or infinity"), (np.inf, "NaN or infinity"),
                                           (3e38, "L2 norm"), (3e17, "L2 norm")])
def test_query_vectors_as_float32_arrays_obey_the_vector_rule(box, value, problem):
    """An embedder hands the engine a float32 matrix, not lists: the same rule applies to it."""
    name, spec, docs, vecs = loaded(box, n=20)
    good = vecs[:2].astype(np.float32)
    assert {0, 1} <= {h.pk for h in box.engine.search(SearchPlan(table=name, vectors=good, k=3)).hits}
    bad = good.copy()
    bad[1, :] = value  # 16 components of 3e17: norm 1.2e18, over the 1e18 the rule allows
    with pytest.raises(QueryError, match=problem):
        box.engine.search(SearchPlan(table=name, vectors=bad, k=3))


def test_several_query_vectors_each_within_the_norm_rule_are_searched(box):
    """The hot path clears a float32 matrix by the sum of all its squares; rows that each pass
    the rule but sum past it must still be searched (and one row over it still refused)."""
    name, spec, docs, vecs = loaded(box, n=20)
    big = vecs[:3].astype(np.float64) * (0.9e18 / np.linalg.norm(vecs[:3], axis=1, keepdims=True))
    rows = big.astype(np.float32)  # each norm 0.9e18 (rule: <= 1e18); squares sum to 2.43e36 > 1e36
    assert box.engine.search(SearchPlan(table=name, vectors=rows, k=3)).hits
    rows[2] *= np.float32(1.2)  # this row's norm 1.08e18
    with pytest.raises(QueryError, match="L2 norm"):
        box.engine.search(SearchPlan(table=name, vectors=rows, k=3))


def test_fetch_count_aggregate_stats(box):
    name, spec, docs, vecs = loaded(box)
    e = box.engine
    res = e.fetch(FetchPlan(table=name, ids=[5, 999, 3], output_fields=["title"]))
    assert [(h.pk, h.fields["title"]) for h in res.hits] == [(5, "item-5"), (3, "item-3")]
    # multi-valued fields come back as the lists that were written, by key and by search
    [four] = e.fetch(FetchPlan(table=name, ids=[4], output_fields=["tags", "title"])).hits
    assert four.fields == {"tags": ["even", "t1"], "title": "item-4"}
    nearest = e.search(knn(name, vecs[7], k=1, output_fields=["tags"])).hits[0]
    assert (nearest.pk, nearest.fields["tags"]) == (7, ["odd", "t1"])
    [five] = e.fetch(FetchPlan(table=name, ids=[5], include_vector=True, output_fields=[])).hits
    np.testing.assert_allclose(five.vector, vecs[5], rtol=1e-6)
    by_filter = e.fetch(FetchPlan(table=name, filter=Compare(field="title", op="=", value="item-8"), include_vector=True))
    np.testing.assert_allclose(by_filter.hits[0].vector, vecs[8], rtol=1e-6)
    res = e.fetch(FetchPlan(table=name, filter=Compare(field="cate_id", op="=", value=1),
                            sort=[SortKey(field="price", descending=True)], limit=3, offset=1))
    assert [h.pk for h in res.hits] == [291, 286, 281] and res.total == N // CATES
    groups = e.aggregate(AggregatePlan(table=name, group_keys=["cate_id"],
                                       funcs=[AggFunc(func="count"), AggFunc(func="max", field="price")]))
    assert [g["key"]["cate_id"] for g in groups] == list(range(CATES))
    assert groups[1]["values"] == {"count()": N // CATES, "max(price)": pytest.approx(29.6)}
    st = e.stats(name)
    assert st.doc_count == N and st.index_type == "HNSW"
    with pytest.raises(ConflictError):
        e.create_table(spec)


def test_generations_switch_atomically_and_drop_the_old(box):
    name, spec, docs, vecs = loaded(box, n=50)
    e = box.engine
    gen = e.begin_generation(name)
    new_docs, new_vecs = make_docs(30, seed=9)
    e.upsert(name, [Document(pk=1000 + d.pk, fields=d.fields, vector=d.vector) for d in new_docs], generation=gen)
    assert e.count(name) == 50  # readers still see the live generation
    gens = {g["generation"]: g for g in e.generations(name)}
    assert gens[gen]["live"] is False and gens[gen]["doc_count"] == 30
    e.switch_generation(name, gen)
    assert e.count(name) == 30 and e.get(name, [1000])[0].pk == 1000 and e.get(name, [0]) == []
    assert [g["generation"] for g in e.generations(name)] == [gen]
    aborted = e.begin_generation(name)
    e.abort_generation(name, aborted)
    assert [g["generation"] for g in e.generations(name)] == [gen]


def test_restart_keeps_documents_index_and_deletes(box):
    name, spec, docs, vecs = loaded(box)
    box.engine.delete(name, [1])
    box.engine.upsert(name, [Document(pk=2, fields={"title": "two"}, vector=vecs[3])])
    e = box.reopen()
    assert e.count(name) == N - 1 and e.get(name, [2])[0].fields["title"] == "two"
    res = e.search(knn(name, vecs[3], k=2))
    assert sorted(h.pk for h in res.hits) == [2, 3]
    assert e.list_tables() == [name] or name in e.list_tables()


@contextmanager
def readers_searching(check: Callable[[], None], threads: int = 3) -> Iterator[None]:
    """Threads calling ``check()`` back to back while the block runs; its first failure is raised."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                check()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(threads)]
    for t in readers:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in readers:
            t.join()
    if errors:
        raise errors[0]


def test_concurrent_searches_during_writes_see_whole_documents(box):
    name, spec, docs, vecs = loaded(box, n=200)
    e = box.engine

    def check():
        res = e.search(knn(name, vecs[0], k=5, output_fields=["title"]))
        assert len(res.hits) == 5 and all(h.fields["title"].startswith("item-") for h in res.hits)

    with readers_searching(check):
        for round_ in range(10):
            batch, _ = make_docs(200, seed=round_)
            e.upsert(name, batch)
    assert e.count(name) == 200


# -- embedded-only: crash recovery ---------------------------------------------------------

def test_embedded_crash_after_checkpoint_rebuilds_from_sqlite(tmp_path):
    from adapter.engines.embedded import EmbeddedEngine

    e = EmbeddedEngine(tmp_path)
    e.create_table(make_spec("t"))
    docs, vecs = make_docs(100)
    e.upsert("t", docs[:50])
    e.checkpoint()
    e.upsert("t", docs[50:])  # committed to SQLite, faiss file now stale
    e.delete("t", [0])
    # no close(): a second process opens the same directory as if the first had crashed
    e2 = EmbeddedEngine(tmp_path)
    assert e2.count("t") == 99
    res = e2.search(knn("t", vecs[77], k=1))
    assert res.hits[0].pk == 77 and res.hits[0].score == pytest.approx(0, abs=1e-5)
    assert 0 not in {h.pk for h in e2.search(knn("t", vecs[0], k=99, hit=99)).hits}
    e2.close()
    (tmp_path / "tables" / "t" / "g1" / "index.faiss").write_bytes(b"garbage")
    e3 = EmbeddedEngine(tmp_path)
    assert e3.search(knn("t", vecs[60], k=1)).hits[0].pk == 60
    e3.close()


def test_embedded_qc_trains_automatically_at_linear_build_threshold(tmp_path):
    from adapter.engines.embedded import EmbeddedEngine

    spec = make_spec("qc", index_type=VectorIndexType.QC)
    spec = spec.model_copy(update={"vector_index": spec.vector_index.model_copy(update={"linear_build_threshold": 200})})
    e = EmbeddedEngine(tmp_path)
    e.create_table(spec)
    docs, vecs = make_docs(300)
    e.upsert("qc", docs[:100])
    assert e.stats("qc").extra["trained"] is False  # below the threshold: exact search
    assert e.search(knn("qc", vecs[5], k=1)).hits[0].pk == 5
    e.upsert("qc", docs[100:])
    st = e.stats("qc")
    assert st.extra["trained"] is True and st.extra["indexed"] == 300 and st.extra["nlist"] == 4
    assert e.search(knn("qc", vecs[250], k=1, search_params=SearchParams(nprobes=4))).hits[0].pk == 250
    e.close()
