"""The embedded engine's filtered search strategies against an exact brute force computed here.

The engine turns a filter into a set of positions, then searches that set exactly or walks the
HNSW graph / IVF lists restricted to it (adapter/engines/knn.py). Each strategy is forced in
turn through the cost constant, at filters matching 10 %, 1 % and 0.1 % of the rows, on HNSW,
Qc and Linear tables; whichever runs, the answer must be the filtered top-k.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.engines import knn as knn_module
from adapter.plan.records import Document
from adapter.engines.embedded import EmbeddedEngine
from adapter.plan.tree import And, Compare, FetchPlan, InList, Not, Or, SearchParams, SearchPlan
from adapter.schema.model import (
    DistanceType, FieldSpec, FieldType, HnswParams, QcParams, TableSpec, VectorIndexSpec, VectorIndexType,
)
from test_engines import brute as brute_force

DIM = 16
N = 3000
K = 10


def make_spec(index_type: VectorIndexType, distance=DistanceType.SQUARED_EUCLIDEAN) -> TableSpec:
    return TableSpec(
        name="items", primary_key="id",
        fields=[FieldSpec(name="id", type=FieldType.INT64), FieldSpec(name="cate_id", type=FieldType.INT64),
                FieldSpec(name="shard", type=FieldType.INT32), FieldSpec(name="price", type=FieldType.DOUBLE),
                FieldSpec(name="title", type=FieldType.STRING),
                FieldSpec(name="vector", type=FieldType.FLOAT, multi_value=True)],
        vector_index=VectorIndexSpec(
            name="vector", pk_field="id", vector_field="vector", dimension=DIM, distance=distance,
            index_type=index_type,
            hnsw=HnswParams(max_neighbor_count=16, ef_construction=40, ef_search=32)
            if index_type is VectorIndexType.HNSW else None,
            qc=QcParams(centroid_count=16) if index_type is VectorIndexType.QC else None,
            linear_build_threshold=100),
    )


def fields_of(i: int) -> dict:
    # cate_id = i % 10 (10 %), shard = i % 100 (1 %), price = i / 10 ; every 7th document has no cate_id
    return {"cate_id": None if i % 7 == 6 else i % 10, "shard": i % 100, "price": i / 10, "title": f"item-{i}"}


def matches(expr, i: int) -> bool:
    """The filter evaluated in plain Python: a missing value never matches a comparison."""
    f = fields_of(i)
    if isinstance(expr, Compare):
        v = f[expr.field]
        ops = {"=": v == expr.value, "!=": v != expr.value, "<": v is not None and v < expr.value,
               ">": v is not None and v > expr.value, "<=": v is not None and v <= expr.value,
               ">=": v is not None and v >= expr.value}
        return v is not None and ops[expr.op]
    if isinstance(expr, InList):
        v = f[expr.field]
        return v is not None and ((v in expr.values) != expr.negate)
    if isinstance(expr, And):
        return all(matches(e, i) for e in expr.items)
    if isinstance(expr, Or):
        return any(matches(e, i) for e in expr.items)
    return not matches(expr.item, i)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(11)
    vecs = rng.standard_normal((N, DIM)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def load(tmp_path, vectors, index_type, distance=DistanceType.SQUARED_EUCLIDEAN) -> EmbeddedEngine:
    engine = EmbeddedEngine(tmp_path / index_type.value)
    engine.create_table(make_spec(index_type, distance))
    if index_type is VectorIndexType.QC:
        engine.train("items", vectors)
    engine.upsert("items", [Document(pk=i, fields=fields_of(i), vector=vectors[i]) for i in range(N)])
    return engine


def brute(vectors: np.ndarray, q: np.ndarray, mask: np.ndarray, distance: DistanceType):
    """The exact top-K over the rows where mask is true: (ids, scores)."""
    ids, scores = brute_force(vectors, q, distance, mask)
    return ids[:K], scores[:K]


SELECTIVITIES = {
    "10%": Compare(field="cate_id", op="=", value=3),
    "1%": Compare(field="shard", op="=", value=42),
    "0.1%": And(items=[Compare(field="shard", op="=", value=42), Compare(field="price", op="<", value=30)]),
    "string field (SQLite)": InList(field="title", values=[f"item-{i}" for i in range(0, N, 40)]),
    "90%": Not(item=Compare(field="cate_id", op="=", value=3)),
}
STRATEGIES = {"exact": 10 ** 9, "restricted ANN": 0}  # knn.EXACT_ROWS_PER_EF_UNIT


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("selectivity", list(SELECTIVITIES))
@pytest.mark.parametrize("index_type", [VectorIndexType.HNSW, VectorIndexType.QC, VectorIndexType.LINEAR])
def test_filtered_search_returns_the_filtered_top_k(tmp_path, vectors, monkeypatch, index_type, selectivity, strategy):
    monkeypatch.setattr(knn_module, "EXACT_ROWS_PER_EF_UNIT", STRATEGIES[strategy])
    engine = load(tmp_path, vectors, index_type)
    expr = SELECTIVITIES[selectivity]
    mask = np.array([matches(expr, i) for i in range(N)])
    assert mask.any()
    rng = np.random.default_rng(5)
    found = 0
    for q in rng.standard_normal((20, DIM)).astype(np.float32):
        res = engine.search(SearchPlan(table="items", vectors=q[None, :], k=K, hit=K, filter=expr,
                                       output_fields=["cate_id", "shard", "price"],
                                       search_params=SearchParams(ef_search=128)))
        ids, scores = brute(vectors, q, mask, DistanceType.SQUARED_EUCLIDEAN)
        got = [h.pk for h in res.hits]
        assert len(got) == len(ids) == min(K, int(mask.sum()))  # k hits whenever k documents match
        assert all(mask[pk] for pk in got)
        assert res.searched_docs == int(mask.sum())
        exact_score = {int(i): float(((vectors[i] - q) ** 2).sum()) for i in got}
        if index_type is VectorIndexType.QC:  # int8 codes: scores and near-ties are approximate
            np.testing.assert_allclose([h.score for h in res.hits], [exact_score[pk] for pk in got], atol=0.05)
        else:
            np.testing.assert_allclose([h.score for h in res.hits], [exact_score[pk] for pk in got], rtol=1e-4, atol=1e-4)
        if index_type is VectorIndexType.LINEAR or strategy == "exact" and index_type is VectorIndexType.HNSW:
            assert got == list(ids)
        found += len(set(got) & set(ids.tolist()))
    recall = found / (20 * min(K, int(mask.sum())))
    assert recall >= (0.9 if index_type is VectorIndexType.QC else 0.98)
    engine.close()


def test_qc_exact_search_params_give_fp32_scores_under_a_filter(tmp_path, vectors):
    engine = load(tmp_path, vectors, VectorIndexType.QC)
    expr = SELECTIVITIES["1%"]
    mask = np.array([matches(expr, i) for i in range(N)])
    q = vectors[4200 % N] + 0.05
    res = engine.search(SearchPlan(table="items", vectors=q[None, :], k=K, hit=K, filter=expr,
                                   search_params=SearchParams(exact=True)))
    ids, scores = brute(vectors, q, mask, DistanceType.SQUARED_EUCLIDEAN)
    assert [h.pk for h in res.hits] == list(ids)
    np.testing.assert_allclose([h.score for h in res.hits], scores, rtol=1e-5, atol=1e-5)
    engine.close()


@pytest.mark.parametrize("index_type", [VectorIndexType.HNSW, VectorIndexType.QC, VectorIndexType.LINEAR])
def test_replaced_and_deleted_documents_never_come_back(tmp_path, vectors, index_type):
    engine = load(tmp_path, vectors, index_type, DistanceType.INNER_PRODUCT)
    engine.delete("items", list(range(0, 300)))
    moved = {i: -vectors[i] for i in range(300, 600)}  # replaced: same pk, opposite vector, cate_id 3
    engine.upsert("items", [Document(pk=i, fields={**fields_of(i), "cate_id": 3}, vector=v) for i, v in moved.items()])
    expr = Compare(field="cate_id", op="=", value=3)
    current = vectors.copy()
    for i, v in moved.items():
        current[i] = v
    mask = np.array([i >= 300 and (300 <= i < 600 or matches(expr, i)) for i in range(N)])
    for q in (vectors[450], -vectors[450], vectors[10]):
        res = engine.search(SearchPlan(table="items", vectors=q[None, :], k=K, hit=K, filter=expr,
                                       search_params=SearchParams(exact=index_type is VectorIndexType.QC)))
        ids, _ = brute(current, q, mask, DistanceType.INNER_PRODUCT)
        assert [h.pk for h in res.hits] == list(ids)
        unfiltered = engine.search(SearchPlan(table="items", vectors=q[None, :], k=50, hit=50,
                                              search_params=SearchParams(exact=index_type is VectorIndexType.QC)))
        assert len(unfiltered.hits) == 50 and all(h.pk >= 300 for h in unfiltered.hits)
    assert engine.count("items") == N - 300
    engine.close()


# -- the in-memory filter evaluation agrees with SQL -------------------------------------------

NUMERIC = {"cate_id": st.integers(-1, 11), "shard": st.integers(0, 100), "price": st.floats(0, 300, width=32)}
compares = st.sampled_from(sorted(NUMERIC)).flatmap(
    lambda f: st.builds(Compare, field=st.just(f), op=st.sampled_from(["=", "!=", "<", ">", "<=", ">="]),
                        value=NUMERIC[f] | st.floats(-1, 12).filter(lambda v: not v.is_integer())))
in_lists = st.sampled_from(["cate_id", "shard"]).flatmap(
    lambda f: st.builds(InList, field=st.just(f), values=st.lists(NUMERIC[f], max_size=4), negate=st.booleans()))
filters = st.recursive(compares | in_lists, lambda inner: st.one_of(
    st.builds(And, items=st.lists(inner, min_size=1, max_size=3)),
    st.builds(Or, items=st.lists(inner, min_size=1, max_size=3)),
    st.builds(Not, item=inner)), max_leaves=6)


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory, vectors):
    engine = EmbeddedEngine(tmp_path_factory.mktemp("memfilter"))
    engine.create_table(make_spec(VectorIndexType.LINEAR))
    engine.upsert("items", [Document(pk=i, fields=fields_of(i), vector=vectors[i]) for i in range(300)])
    yield engine
    engine.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expr=filters)
def test_search_filters_match_exactly_what_sql_fetch_matches(small_engine, expr):
    """Search evaluates numeric filters over in-memory columns; fetch runs them in SQLite."""
    res = small_engine.search(SearchPlan(table="items", vectors=np.ones((1, DIM), np.float32), k=300, hit=300,
                                         filter=expr, output_fields=[]))
    fetched = small_engine.fetch(FetchPlan(table="items", filter=expr, limit=300, output_fields=[]))
    assert sorted(h.pk for h in res.hits) == sorted(h.pk for h in fetched.hits)
    assert sorted(h.pk for h in res.hits) == [i for i in range(300) if matches(expr, i)]


def test_qc_probes_the_asked_lists_unfiltered_and_widens_them_by_selectivity_when_filtered(tmp_path, vectors, monkeypatch):
    """A broad filter (members in every list, more lists than the widened probe) widens nprobes."""
    from adapter.engines.faissindex import VectorIndex

    engine = load(tmp_path, vectors, VectorIndexType.QC)
    probed: list[int] = []
    real = VectorIndex.search
    monkeypatch.setattr(VectorIndex, "search", lambda self, *a, **kw: probed.append(kw["nprobes"]) or real(self, *a, **kw))
    q = vectors[7][None, :]
    broad = SELECTIVITIES["90%"]
    engine.search(SearchPlan(table="items", vectors=q, k=K, search_params=SearchParams(nprobes=2)))
    engine.search(SearchPlan(table="items", vectors=q, k=K, filter=broad, search_params=SearchParams(nprobes=2)))
    fraction = sum(matches(broad, i) for i in range(N)) / N
    assert probed[0] == 2
    assert probed[1] == int(np.ceil(knn_module.IVF_WIDENING * 2 / fraction)) < 16
    engine.close()


def _lists_and_full_probe(engine: EmbeddedEngine, vectors: np.ndarray, q: np.ndarray, mask: np.ndarray):
    """Computed here from the faiss index itself: the lists holding the masked rows (each row's
    nearest centroid by the table's metric), and the top-K of a probe of all 16 lists restricted to those rows."""
    import faiss

    with engine._reading("items") as gen:
        ivf = gen.index.index
        centroids = faiss.rev_swig_ptr(faiss.downcast_index(ivf.quantizer).get_xb(), 16 * DIM).reshape(16, DIM)
        position = {int(pk): p for p, pk in enumerate(gen.index.rows.pks[:gen.index.rows.n])}
        members = np.flatnonzero(mask)  # primary keys
        rows = [position[int(pk)] for pk in members]
        if gen.spec.distance is DistanceType.INNER_PRODUCT:
            nearest = (vectors[members] @ centroids.T).argmax(1)
        else:
            nearest = ((vectors[members][:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        allowed = np.zeros(ivf.ntotal, dtype=bool)
        allowed[rows] = True
        bitmap = np.packbits(allowed, bitorder="little")
        params = faiss.SearchParametersIVF(nprobe=16, sel=faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)))
        scores, found = ivf.search(q[None, :], K, params=params)
        pks = [int(gen.index.rows.pks[p]) for p in found[0] if p >= 0]
    return sorted(set(nearest.tolist())), pks, scores[0][:len(pks)]


@pytest.mark.parametrize("distance", [DistanceType.SQUARED_EUCLIDEAN, DistanceType.INNER_PRODUCT])
@pytest.mark.parametrize("reopen", [False, True])
def test_qc_small_filter_probes_exactly_the_lists_holding_its_members(tmp_path, vectors, monkeypatch, reopen, distance):
    """A narrow filter (its members in fewer lists than the widened probe) walks only those
    lists and answers what a probe of all lists restricted to the members answers; the same
    after a restart (the list of each position read back from the index file)."""
    from adapter.engines.faissindex import VectorIndex

    engine = load(tmp_path, vectors, VectorIndexType.QC, distance)
    if reopen:
        engine.close()
        engine = EmbeddedEngine(tmp_path / VectorIndexType.QC.value)
    probed: list[list[int]] = []
    real = VectorIndex.search_lists
    monkeypatch.setattr(VectorIndex, "search_lists",
                        lambda self, q, k, sel, lists: probed.append(lists.tolist()) or real(self, q, k, sel, lists))
    narrow = SELECTIVITIES["0.1%"]
    mask = np.array([matches(narrow, i) for i in range(N)])
    rng = np.random.default_rng(8)
    for q in rng.standard_normal((5, DIM)).astype(np.float32):
        res = engine.search(SearchPlan(table="items", vectors=q[None, :], k=K, filter=narrow,
                                       search_params=SearchParams(nprobes=1)))
        lists, pks, scores = _lists_and_full_probe(engine, vectors, q, mask)
        assert probed.pop() == lists and len(lists) < 16
        assert [h.pk for h in res.hits] == pks and len(pks) == min(K, int(mask.sum()))
        np.testing.assert_allclose([h.score for h in res.hits], scores, rtol=1e-6)
    engine.close()
