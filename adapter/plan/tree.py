"""SearchPlan, FetchPlan, AggregatePlan and the filter expression tree.

Parsers (HA query strings, vector-service JSON) build these; engines compile the filter
tree into their own language (SQL for the embedded engine, query DSL for OpenSearch). No
engine ever sees an HA3 string; no parser ever builds engine syntax.
"""

from __future__ import annotations

from typing import Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, InstanceOf

Scalar = Union[int, float, str]
CompareOp = Literal["=", "!=", "<", ">", "<=", ">="]

# The pseudo-field that means "the vector score" in sort keys (HA3's RANK).
RANK = "RANK"

# Query vectors: lists of floats as parsed, or an (n, dimension) numpy matrix as an embedder
# returns it, kept as is (a round trip through 512 Python floats costs more than the search).
QueryVectors = Union[InstanceOf[np.ndarray], list[list[float]]]


class Compare(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["compare"] = "compare"
    field: str
    op: CompareOp
    value: Scalar


class InList(BaseModel):
    """HA3 ``in(field, "1|2|3")`` / ``notin(...)``."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["in"] = "in"
    field: str
    values: list[Scalar]
    negate: bool = False


class And(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["and"] = "and"
    items: list["FilterExpr"]


class Or(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["or"] = "or"
    items: list["FilterExpr"]


class Not(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["not"] = "not"
    item: "FilterExpr"


FilterExpr = Union[Compare, InList, And, Or, Not]
And.model_rebuild()
Or.model_rebuild()
Not.model_rebuild()


def filter_fields(expr: FilterExpr | None) -> set[str]:
    """Every field name a filter mentions (for validation against the TableSpec)."""
    if expr is None:
        return set()
    if isinstance(expr, (Compare, InList)):
        return {expr.field}
    if isinstance(expr, Not):
        return filter_fields(expr.item)
    return set().union(*(filter_fields(i) for i in expr.items))


class SortKey(BaseModel):
    model_config = ConfigDict(frozen=True)
    field: str  # an attribute name, or RANK for the vector score
    descending: bool = False


class SearchParams(BaseModel):
    """Engine-neutral per-query tuning, translated from proxima names by the query layer."""

    model_config = ConfigDict(frozen=True)
    ef_search: int | None = None  # HNSW
    nprobes: int | None = None  # IVF lists probed
    scan_ratio: float | None = None  # Qc: fraction of documents (engine turns into nprobes)
    exact: bool = False  # brute force regardless of index type


class AggFunc(BaseModel):
    func: Literal["count", "sum", "min", "max", "avg"]
    field: str | None = None  # None only for count
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or (f"{self.func}({self.field})" if self.field else f"{self.func}()")


class Distinct(BaseModel):
    """Walking hits best first, keep at most ``count * times`` per value of ``key``;
    ``reserved``: the surplus follows the kept hits instead of being dropped (HA3 distinct)."""

    model_config = ConfigDict(frozen=True)
    key: str
    count: int = 1
    times: int = 1
    reserved: bool = False


class Facet(BaseModel):
    """Groups of the top-k hits by ``group_key``, with ``funcs`` per group (HA3 aggregate)."""

    model_config = ConfigDict(frozen=True)
    group_key: str
    funcs: list[AggFunc] = Field(default_factory=lambda: [AggFunc(func="count")])
    max_groups: int = 1000


class SearchPlan(BaseModel):
    """One k-NN search, fully resolved except (possibly) the query content's embedding.

    ``vectors`` holds one or more query vectors. When a plan comes from text or image
    content, the parser fills ``content``/``modal`` and the executor embeds it into
    ``vectors`` before the engine sees the plan (engines require ``vectors``).
    """

    model_config = ConfigDict(frozen=False)

    table: str
    vectors: QueryVectors = Field(default_factory=list)
    content: bytes | None = None  # UTF-8 text or image bytes, already Base64-decoded
    modal: Literal["text", "image"] | None = None
    k: int = 10  # HA3 n / topK: neighbours per query vector
    multi_vector_mode: Literal["sum", "max", "min"] = "max"  # merge rule for several vectors
    filter: FilterExpr | None = None
    sort: list[SortKey] = Field(default_factory=lambda: [SortKey(field=RANK)])
    output_fields: list[str] | None = None  # None: every attribute field
    include_vector: bool = False
    score_threshold: float | None = None  # HA3 sf: squared L2 above / inner product below dropped
    search_params: SearchParams = Field(default_factory=SearchParams)
    start: int = 0  # paging over the merged, sorted hits
    hit: int = 10
    # Applied by the executor over the top-k hits; engines never see them set.
    distinct: Distinct | None = None
    facets: list[Facet] = Field(default_factory=list)

    def needs_embedding(self) -> bool:
        return len(self.vectors) == 0 and self.content is not None


class FetchPlan(BaseModel):
    """Documents by key, or by filter with sort and paging (vector-service fetch)."""

    table: str
    ids: list[Scalar] | None = None
    filter: FilterExpr | None = None
    sort: list[SortKey] = Field(default_factory=list)
    limit: int = 100
    offset: int = 0
    output_fields: list[str] | None = None
    include_vector: bool = False


class AggregatePlan(BaseModel):
    table: str
    group_keys: list[str] = Field(default_factory=list)
    funcs: list[AggFunc] = Field(default_factory=lambda: [AggFunc(func="count")])
    filter: FilterExpr | None = None
    max_groups: int = 1000
