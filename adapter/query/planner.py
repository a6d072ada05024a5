"""Clause tree (``HAQuery``) + catalog → ``SearchPlan`` and ``ResponseOptions``.

Index resolution rule (HA3 names a vector INDEX, not a table):
  the term's INDEX matches a table when it equals that table's vector index name, its
  vector field name, or the table name itself. Candidate tables: the one ``cluster``
  names, when ``cluster`` is a table name; every table in the catalog for
  ``cluster=general`` (HA3's default cluster, which the SDK always sends) or no cluster.
  Any other cluster is HA3's error 1001 (ERROR_CLUSTER_NAME_NOT_EXIST), not a silent
  search of everything. Exactly one match → that table; none → QueryError "unknown index";
  several → QueryError asking for ``cluster=<table>``.

Validation here (names and values that need the TableSpec): vector dimension, filter,
sort, distinct and aggregate fields, search_params names and values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from adapter.errors import NotFoundError, QueryError
from adapter.plan.engine import Engine
from adapter.plan.tree import RANK, AggFunc, Distinct, Facet, SearchParams, SearchPlan, SortKey, filter_fields
from adapter.query.haquery import MAX_N, AggregateClause, DistinctClause, HAQuery
from adapter.schema.model import TableSpec

GENERAL_CLUSTER = "general"
ERROR_CLUSTER_NAME_NOT_EXIST = 1001  # HA3's code, with its message "ConfigClause: cluster name not exist."


@dataclass
class ResponseOptions:
    """What the formatter and the executor's post-processing need beyond the plan."""

    format: Literal["json", "fulljson", "xml"] = "json"
    fetch_summary_type: Literal["pk", "docid"] | None = None
    pk_field: str = "id"
    cluster: str = GENERAL_CLUSTER
    sort: list[SortKey] = field(default_factory=list)
    output_fields: list[str] | None = None  # fields to render (None: all returned)
    start: int = 0
    hit: int = 10
    trace: list[str] = field(default_factory=list)  # notes for the tracer (ignored params)


# proxima searcher names → engine-neutral SearchParams fields
_EF_NAMES = {"proxima.hnsw.searcher.ef", "proxima.qgraph.searcher.ef", "ef", "ef_search",
             "proxima.graph.common.searcher.ef"}
_SCAN_NAMES = {"proxima.qc.searcher.scan_ratio", "scan_ratio"}
_NPROBE_NAMES = {"nprobes", "proxima.qc.searcher.nprobes", "nprobe"}
_EXACT_NAMES = {"exact", "brute_force", "proxima.linear.searcher.exact"}


def translate_search_params(params: dict[str, Any], location: str = "search_params") -> tuple[SearchParams, list[str]]:
    """Map HA3/proxima per-query searcher params to SearchParams; return ignored names too."""
    out: dict[str, Any] = {}
    ignored = []
    for name, value in params.items():
        where = f"{location}.{name}"
        if name in _EF_NAMES:
            out["ef_search"] = _searcher_count(value, where)
        elif name in _NPROBE_NAMES:
            out["nprobes"] = _searcher_count(value, where)
        elif name in _SCAN_NAMES:
            try:
                ratio = float(value)
            except (TypeError, ValueError):
                raise QueryError(f"{name} must be a number in (0, 1], got {value!r}", where) from None
            if not 0 < ratio <= 1:
                raise QueryError(f"{name} must be in (0, 1], got {ratio}", where)
            out["scan_ratio"] = ratio
        elif name in _EXACT_NAMES:
            out["exact"] = value in (True, 1, "true", "1")
        else:
            ignored.append(name)
    return SearchParams(**out), ignored


def _searcher_count(value: Any, where: str) -> int:
    """ef or nprobes: a whole number in 1..100000 (QueryError otherwise)."""
    try:
        n = int(value)
        if isinstance(value, float) and n != value:
            raise ValueError
    except (TypeError, ValueError):
        raise QueryError(f"must be a positive integer, got {value!r}", where) from None
    if n <= 0 or n > 100000:
        raise QueryError(f"must be in 1..100000, got {n}", where)
    return n


def table_for_index(catalog: Engine, index: str, cluster: str | None, location: str,
                  cluster_location: str = "cluster") -> TableSpec:
    def matches(spec: TableSpec) -> bool:
        return index in (spec.vector_index.name, spec.vector_field, spec.name)

    if cluster and cluster != GENERAL_CLUSTER:
        try:
            spec = catalog.get_spec(cluster)
        except NotFoundError:
            raise QueryError(f"ConfigClause: cluster name not exist. ClusterName:{cluster} (clusters here: "
                             f"{GENERAL_CLUSTER!r}, the whole instance, or a table name)", cluster_location,
                             code=ERROR_CLUSTER_NAME_NOT_EXIST) from None
        if not matches(spec):
            raise QueryError(f"unknown index {index!r} in table {cluster!r} "
                             f"(its vector index is {spec.vector_index.name!r})", location)
        return spec
    names = list(catalog.list_tables())
    found = [s for s in (_spec_or_none(catalog, n) for n in names) if s is not None and matches(s)]
    if not found:
        raise QueryError(f"unknown index {index!r}", location)
    if len(found) > 1:
        raise QueryError(f"index {index!r} exists in several tables "
                         f"({', '.join(s.name for s in found)}); name one with cluster=<table>", location)
    return found[0]


def _spec_or_none(catalog: Engine, name: str) -> TableSpec | None:
    """A listed table that is gone by the time we ask (dropped meanwhile) is skipped."""
    try:
        return catalog.get_spec(name)
    except NotFoundError:
        return None


def check_fields(spec: TableSpec, names: set[str], what: str, location: str, allow_rank: bool = False) -> None:
    known = {f.name for f in spec.attribute_fields}
    for name in sorted(names):
        if allow_rank and name == RANK:
            continue
        if name not in known:
            raise QueryError(f"unknown {what} field {name!r} (table {spec.name!r} has "
                             f"{', '.join(sorted(known))})", location)


def check_dimension(spec: TableSpec, vectors: list[list[float]], location: str) -> None:
    for v in vectors:
        if len(v) != spec.dimension:
            raise QueryError(f"query vector has {len(v)} dimensions, index {spec.vector_index.name!r} "
                             f"expects {spec.dimension}", location)


def default_sort() -> list[SortKey]:
    """Best first (engine semantics: RANK ascending = relevance order)."""
    return [SortKey(field=RANK, descending=False)]


def engine_sort(keys: list[SortKey], spec: TableSpec) -> list[SortKey]:
    """HA3 sort keys are literal (``+RANK`` = proxima_score ascending, ``-RANK`` descending);
    engines read ``RANK`` as relevance order (``descending=False`` = best first for both
    metrics). So on InnerProduct tables the RANK direction flips: HA3 ``-RANK`` (largest
    inner product first) is the engines' best-first."""
    flip = spec.distance.higher_is_better
    return [SortKey(field=k.field, descending=k.descending != flip) if k.field == RANK else k for k in keys]


def plan_ha_query(q: HAQuery, catalog: Engine) -> tuple[SearchPlan, ResponseOptions]:
    term = q.query
    assert term is not None  # parse_ha_query guarantees a query clause
    term_loc = f"query offset {term.offset}"
    spec = table_for_index(catalog, term.index, q.cluster, term_loc, f"query offset {q.offsets.get('cluster', 0)}")
    if term.vectors:
        check_dimension(spec, term.vectors, term_loc)
    elif term.modal and spec.embedding is None:
        raise QueryError(f"table {spec.name!r} has no built-in vector model; send a vector instead of "
                         f"modal={term.modal}", term_loc)

    opts = ResponseOptions(format=q.config.format, fetch_summary_type=q.config.fetch_summary_type,
                           pk_field=spec.primary_key, cluster=q.cluster or GENERAL_CLUSTER,
                           start=q.config.start, hit=q.config.hit)
    if q.filter is not None:
        check_fields(spec, filter_fields(q.filter), "filter", f"query offset {q.offsets['filter']}")
    if q.sort:
        check_fields(spec, {k.field for k in q.sort}, "sort", f"query offset {q.offsets['sort']}", allow_rank=True)
        sort = engine_sort(q.sort, spec)
    else:
        sort = default_sort()
    opts.sort = sort
    extra_fields: set[str] = set()
    if q.distinct:
        check_fields(spec, {q.distinct.key}, "distinct", f"query offset {q.offsets['distinct']}")
        extra_fields.add(q.distinct.key)
    for agg in q.aggregates:
        names = {agg.group_key} | {f.field for f in agg.funcs if f.field}
        check_fields(spec, names, "aggregate", f"query offset {q.offsets['aggregate']}")
        extra_fields |= names
    formula = q.kvpairs.get("formula")
    if formula is not None and formula.replace(" ", "") not in (
            "proxima_score(%s)" % n for n in (term.index, spec.vector_field, spec.vector_index.name)):
        opts.trace.append(f"kvpairs formula {formula!r} ignored: the rank score is proxima_score")

    params, ignored = translate_search_params(term.search_params, f"query offset {term.offset} search_params")
    opts.trace += [f"search_params {n!r} ignored" for n in ignored]

    # n is the top-k of the vector search; start/hit page over those hits.
    k = term.n if term.n is not None else min(MAX_N, max(q.config.start + q.config.hit, 1))
    if q.config.fetch_summary_type == "pk":
        output = sorted({spec.primary_key} | extra_fields)
        opts.output_fields = [spec.primary_key]
    else:
        output = None
    plan = SearchPlan(
        table=spec.name, vectors=term.vectors, content=term.content, modal=term.modal, k=k,
        filter=q.filter, sort=sort, output_fields=output, score_threshold=term.sf,
        search_params=params, start=q.config.start, hit=q.config.hit,
        distinct=plan_distinct(q.distinct) if q.distinct else None,
        facets=[plan_facet(a) for a in q.aggregates],
    )
    return plan, opts


def plan_distinct(clause: DistinctClause) -> Distinct:
    """HA3's ``reserved`` option (verbatim text in the clause) as the plan's flag."""
    return Distinct(key=clause.key, count=clause.count, times=clause.times,
                    reserved=clause.extra.get("reserved", "false").lower() == "true")


def plan_facet(clause: AggregateClause) -> Facet:
    return Facet(group_key=clause.group_key, max_groups=clause.max_group,
                 funcs=[AggFunc(func=f.func, field=f.field) for f in clause.funcs])

