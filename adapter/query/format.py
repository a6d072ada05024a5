"""HA3 responses: ``format:json`` (default), ``fulljson`` and ``xml``; and HA3 errors.

json:  ``{"errors": [], "result": {"searchtime", "totalHits", "numHits", "coveredPercent",
         "items": [{"fields", "sortExprValues", "property", "attribute", "variableValue"}],
         "facet": [...]}, "tracer": "", "totalTime"}``.
Summary field values are rendered as strings, as HA3 summaries are text (multi-value
fields joined with spaces); sortExprValues are strings (``RANK`` is the proxima_score).
fulljson adds, per item, ``clusterName``, ``hashId`` and ``docId`` (our docId is the
hit's rank position: there is no HA3 docid), which is all of HA3's fulljson extras we can
fill honestly. ``fetch_summary_type:pk`` renders the primary key field only.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any, Iterable

from adapter.plan.records import Hit, SearchResult
from adapter.errors import AdapterError
from adapter.plan.tree import RANK


def _text(v: Any) -> str:
    t = type(v)
    if t is str:  # the common cases first: every hit renders several fields
        return v
    if t is int:
        return str(v)
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format(v, ".9g") if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return " ".join(_text(x) for x in v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _item_fields(hit: Hit, opts: Any) -> dict[str, str]:
    pk_field = getattr(opts, "pk_field", "id")
    if getattr(opts, "fetch_summary_type", None) == "pk":
        return {pk_field: _text(hit.pk)}
    fields = {pk_field: _text(hit.pk)}
    fields.update({k: _text(v) for k, v in hit.fields.items()})
    if hit.vector is not None:
        fields.setdefault("vector", _text(hit.vector))
    return fields


def _sort_values(hit: Hit, opts: Any) -> list[str]:
    keys = getattr(opts, "sort", None) or []
    if not keys:
        return [_text(hit.score)]
    return [_text(hit.score if k.field == RANK else hit.fields.get(k.field)) for k in keys]


def _json_result(result: SearchResult, opts: Any, elapsed_s: float, full: bool) -> dict[str, Any]:
    items = []
    for i, hit in enumerate(result.hits):
        item: dict[str, Any] = {
            "fields": _item_fields(hit, opts),
            "sortExprValues": _sort_values(hit, opts),
            "property": {},
            "attribute": {},
            "variableValue": {},
        }
        if full:
            item.update({"clusterName": getattr(opts, "cluster", "general"), "hashId": 0,
                         "docId": getattr(opts, "start", 0) + i})
        items.append(item)
    return {
        "searchtime": round(elapsed_s, 6),
        "totalHits": result.total,
        "numHits": len(result.hits),
        "coveredPercent": 100,
        "items": items,
        "facet": list(getattr(result, "facets", []) or []),
    }


def format_ha_response(result: SearchResult, q_options: Any, elapsed_s: float) -> dict[str, Any] | str:
    fmt = getattr(q_options, "format", "json")
    tracer = "\n".join(getattr(q_options, "trace", []) or [])
    if fmt == "xml":
        return _xml(result, q_options, elapsed_s, [])
    return {
        "errors": [],
        "result": _json_result(result, q_options, elapsed_s, full=fmt == "fulljson"),
        "tracer": tracer,
        "totalTime": round(elapsed_s, 6),
    }


def _error_items(errors: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        if isinstance(e, AdapterError):
            out.append(e.to_dict())
        elif isinstance(e, dict):
            out.append({"code": e.get("code", 1000), "message": e.get("message", "")})
        else:
            out.append({"code": 1000, "message": str(e)})
    return out


def format_ha_error(errors: Any, fmt: str = "json") -> dict[str, Any] | str:
    """An HA3 error response (one error or several) in the client's format."""
    if isinstance(errors, (AdapterError, dict, str)):
        errors = [errors]
    items = _error_items(errors)
    empty = SearchResult(hits=[], total=0)
    if fmt == "xml":
        return _xml(empty, None, 0.0, items)
    body = _json_result(empty, None, 0.0, full=False)
    body["coveredPercent"] = 0
    return {"errors": items, "result": body, "tracer": "", "totalTime": 0}


def _xml(result: SearchResult, opts: Any, elapsed_s: float, errors: list[dict[str, Any]]) -> str:
    root = ET.Element("Root")
    ET.SubElement(root, "TotalTime").text = _text(round(elapsed_s, 6))
    hits = ET.SubElement(root, "hits", numhits=str(len(result.hits)), totalhits=str(result.total),
                         searchtime=_text(round(elapsed_s, 6)),
                         coveredPercent="100" if not errors else "0")
    for i, hit in enumerate(result.hits):
        el = ET.SubElement(hits, "hit", cluster_name=getattr(opts, "cluster", "general"), hash_id="0",
                           docid=str(getattr(opts, "start", 0) + i),
                           sort_value=" ".join(_sort_values(hit, opts)))
        fields = ET.SubElement(el, "fields")
        for k, v in _item_fields(hit, opts).items():
            ET.SubElement(fields, k).text = v
    aggs = ET.SubElement(root, "AggregateResults")
    for facet in getattr(result, "facets", []) or []:
        agg = ET.SubElement(aggs, "AggregateResult", key=str(facet["key"]))
        for item in facet["items"]:
            group = ET.SubElement(agg, "group", value=item["value"])
            for k, v in item.items():
                if k != "value":
                    ET.SubElement(group, k.replace("(", "_").replace(")", "")).text = _text(v)
    err = ET.SubElement(root, "Error")
    first = errors[0] if errors else {"code": 0, "message": ""}
    ET.SubElement(err, "ErrorCode").text = str(first["code"])
    ET.SubElement(err, "ErrorDescription").text = first["message"]
    for extra in errors[1:]:
        more = ET.SubElement(root, "Error")
        ET.SubElement(more, "ErrorCode").text = str(extra["code"])
        ET.SubElement(more, "ErrorDescription").text = extra["message"]
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")
