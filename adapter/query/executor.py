"""Run a SearchPlan: embed query content, search the engine, post-process.

Engines return hits already merged, sorted, thresholded and paged. What HA3 does after
that and engines do not — ``distinct`` and ``aggregate`` over the hits — happens here: the
executor then asks the engine for all top-k hits (start 0), applies distinct, computes the
facets, and pages itself.

distinct: hits are walked best-first; each dist_key value keeps at most
``dist_count * dist_times`` hits. With ``reserved:true`` the surplus hits follow the kept
ones (HA3's "pushed down"); by default they are dropped.

aggregate: facets are computed over the top-k hits that survived filter and threshold
(HA3 aggregates over every matching document; a vector query's matches are its top-k).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapter.embed.base import Embedder
from adapter.plan.engine import Engine
from adapter.plan.records import Hit, SearchResult
from adapter.plan.tree import Distinct, Facet, SearchPlan
from adapter.query.embedding import embed_content


@dataclass
class ExecutedResult(SearchResult):
    facets: list[dict[str, Any]] = field(default_factory=list)


def embed_plan(plan: SearchPlan, engine: Engine, embedder: Embedder | None) -> SearchPlan:
    """Return a copy of ``plan`` whose ``vectors`` hold the embedded content."""
    if not plan.needs_embedding():
        return plan
    vec = embed_content(embedder, engine.get_spec(plan.table), plan.content, plan.modal or "text", "modal")
    return plan.model_copy(update={"vectors": vec[None, :]})


def execute(plan: SearchPlan, engine: Engine, embedder: Embedder | None) -> ExecutedResult:
    plan = embed_plan(plan, engine, embedder)
    if plan.distinct is None and not plan.facets:
        r = engine.search(plan)
        return ExecutedResult(hits=r.hits, total=r.total, searched_docs=r.searched_docs)
    # Engines see a plain top-k search; distinct and facets are this module's work.
    full = engine.search(plan.model_copy(update={"start": 0, "hit": plan.k, "distinct": None, "facets": []}))
    hits = apply_distinct(full.hits, plan.distinct) if plan.distinct else list(full.hits)
    facets = [aggregate_hits(hits, f) for f in plan.facets]
    page = hits[plan.start: plan.start + plan.hit]
    return ExecutedResult(hits=page, total=len(hits), searched_docs=full.searched_docs, facets=facets)


def apply_distinct(hits: list[Hit], d: Distinct) -> list[Hit]:
    limit = d.count * d.times
    seen: dict[Any, int] = {}
    kept, surplus = [], []
    for h in hits:
        key = _hashable(h.fields.get(d.key))
        seen[key] = seen.get(key, 0) + 1
        (kept if seen[key] <= limit else surplus).append(h)
    return kept + surplus if d.reserved else kept


def aggregate_hits(hits: list[Hit], agg: Facet) -> dict[str, Any]:
    """HA3 facet: ``{"key": group_key, "items": [{"value": "v", "count": n, "sum": x}]}``."""
    groups: dict[Any, list[Hit]] = {}
    for h in hits:
        groups.setdefault(_hashable(h.fields.get(agg.group_key)), []).append(h)
    items = []
    for value, members in groups.items():
        item: dict[str, Any] = {"value": "" if value is None else str(value)}
        for fn in agg.funcs:
            name = fn.func if sum(f.func == fn.func for f in agg.funcs) == 1 else f"{fn.func}({fn.field})"
            if fn.func == "count":
                item[name] = len(members)
                continue
            nums = [float(x) for x in (_numbers(m.fields.get(fn.field)) for m in members) for x in x]
            if not nums:
                item[name] = None
            elif fn.func == "sum":
                item[name] = sum(nums)
            elif fn.func == "min":
                item[name] = min(nums)
            elif fn.func == "max":
                item[name] = max(nums)
            else:
                item[name] = sum(nums) / len(nums)
        items.append((len(members), item))
    # most populous groups first, then by value (HA3 orders facet groups by count)
    items.sort(key=lambda pair: (-pair[0], pair[1]["value"]))
    return {"key": agg.group_key, "items": [item for _, item in items[: agg.max_groups]]}


def _numbers(v: Any) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [x for x in v if isinstance(x, (int, float))]
    if isinstance(v, (int, float)):
        return [v]
    try:
        return [float(v)]
    except (TypeError, ValueError):
        return []


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v
