"""HA3 query strings → a clause tree (``HAQuery``).

One tokenizer/parser per clause, in the spirit of sqlglot: text in, plain data out; no
table knowledge here (``planner`` checks names against the TableSpec).

Percent-decoding: ``parse_ha_query`` takes the ALREADY DECODED query text and never
decodes again, so a literal ``%`` or ``+`` survives. The HTTP layer decodes exactly once:
the SDK's ``GET /query?query=<encoded>`` and ``POST /query {"assemblyQuery": ...}`` arrive
decoded by the framework; for GET the server hands the RAW URL query string to
``ha_query_from_url_query``, which tells the SDK shape (``query=<form-encoded>``) from
HA3's native one (``/query?config=...&&query=...``: ``%XX`` decoded once, ``+`` kept so
that ``sort=+RANK`` stays ascending). Because form decoders turn ``+`` into a space, the
parser tolerates that: spaces inside Base64 payloads read as ``+`` and a sort key written
`` RANK`` reads as ``+RANK``.

Every error is a ``QueryError`` located at ``query offset N`` (offset in the decoded text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import numpy as np

from adapter import base64text, safejson
from adapter.errors import QueryError
from adapter.plan.tree import RANK, And, Compare, FilterExpr, InList, Not, Or, SortKey
from adapter.vectors import score_problem, vectors_problem

CLAUSES = ("config", "query", "filter", "sort", "kvpairs", "distinct", "aggregate", "cluster")
MAX_N = 10000
MAX_QUERY_VECTORS = 64  # ';'-separated vectors in one term (each is a k-NN search)
SEARCH_PARAMS_DEPTH = 4  # {"name": value}: proxima params are flat


def _err(message: str, offset: int) -> QueryError:
    return QueryError(message, f"query offset {offset}")


# -- clause tree ----------------------------------------------------------------------


@dataclass
class ConfigClause:
    start: int = 0
    hit: int = 10
    format: Literal["json", "fulljson", "xml"] = "json"
    fetch_summary_type: Literal["pk", "docid"] | None = None
    qrs_chain: str | None = None
    timeout_ms: int | None = None
    rerank_size: int | None = None
    extra: dict[str, str] = field(default_factory=dict)  # unknown keys, kept verbatim


@dataclass
class VectorTerm:
    """``INDEX:'PAYLOAD&n=10&modal=text&sf=4&search_params={...}'``."""

    index: str
    vectors: list[list[float]] = field(default_factory=list)  # numeric payload
    content: bytes | None = None  # Base64-decoded payload when modal is set
    modal: Literal["text", "image"] | None = None
    n: int | None = None
    sf: float | None = None
    search_params: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # other &k=v pairs, verbatim
    offset: int = 0  # of the index name in the decoded query


@dataclass
class DistinctClause:
    key: str
    count: int = 1
    times: int = 1
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class AggFunSpec:
    func: str  # count | sum | min | max | avg
    field: str | None = None


@dataclass
class AggregateClause:
    group_key: str
    funcs: list[AggFunSpec] = field(default_factory=lambda: [AggFunSpec("count")])
    max_group: int = 1000
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class HAQuery:
    text: str
    config: ConfigClause = field(default_factory=ConfigClause)
    query: VectorTerm | None = None
    filter: FilterExpr | None = None
    sort: list[SortKey] | None = None
    kvpairs: dict[str, str] = field(default_factory=dict)
    distinct: DistinctClause | None = None
    aggregates: list[AggregateClause] = field(default_factory=list)
    cluster: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)  # clause name → offset of its value


def decode_raw_query_string(raw: str) -> str:
    """Percent-decode a raw URL query string once (``%XX`` only; ``+`` stays ``+``)."""
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError as exc:
        raise QueryError(f"query string is not valid percent-encoded UTF-8: {exc.reason}", "query offset 0") from None


def ha_query_from_url_query(raw: str, parsed: list[tuple[str, str]] | None = None) -> str:
    """The HA query text of a ``GET /query?...`` request, from the RAW URL query string.

    Two shapes reach us: the SDK's ``query=<urlencoded HA string>`` (form encoding: ``+``
    is a space, so it is decoded with ``unquote_plus``) and HA3's native
    ``config=...&&query=...`` (literal ``&&``; percent-decoded once, ``+`` kept).

    ``parsed``: the same query string already split into form-decoded pairs (the HTTP layer
    has them), which spares decoding a Base64 image a second time. A lenient parse turns
    bytes that are not UTF-8 into U+FFFD; then the strict parse here runs to refuse them.
    """
    # One '&' is a memchr; the SDK's form (a single pair) has none, and a two-character
    # search through a 50 KB image costs 0.04 ms.
    if "&" in raw and "&&" in raw:
        return decode_raw_query_string(raw)
    pairs = parsed
    if pairs is None or any("\ufffd" in k or "\ufffd" in v for k, v in pairs):
        try:
            pairs = parse_qsl(raw, keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise QueryError("query string is not valid percent-encoded UTF-8", "query offset 0") from None
    values = [v for k, v in pairs if k == "query"]
    if len(values) != 1:
        if not pairs:
            raise QueryError("missing query parameter", "query offset 0")
        return decode_raw_query_string(raw)  # a native single-clause query (query=INDEX:'...')
    return values[0]


# -- top level: split on && outside quotes --------------------------------------------


# A quote or an ampersand (doubled when it is "&&"); lone "&" (inside vector terms) is skipped
# below. Starting with a character class lets the regex engine scan ~4x faster than the plain
# alternation ``&&|['"]``.
_SPLIT_TOKENS = re.compile(r"[&'\"](?:(?<=&)&)?")


def _split_clauses(text: str) -> list[tuple[str, int]]:
    """Split on ``&&`` outside quotes; return (segment, offset) pairs. Single quotes wrap
    vector terms (whose JSON may hold double quotes); double quotes wrap filter strings
    (which may hold an apostrophe)."""
    parts: list[tuple[str, int]] = []
    start = pos = 0
    while (m := _SPLIT_TOKENS.search(text, pos)) is not None:
        tok, i = m.group(), m.start()
        pos = m.end()
        if tok == "&&":
            parts.append((text[start:i], start))
            start = pos
        elif tok != "&":
            # Inside quotes only the closing twin matters: str.find jumps over a 50 KB Base64
            # image at memchr speed, where the token scan took 0.12 ms.
            close = text.find(tok, pos)
            if close < 0:
                raise _err("unbalanced single quote" if tok == "'" else "unbalanced double quote", i)
            pos = close + 1
    parts.append((text[start:], start))
    return parts


def parse_ha_query(text: str) -> HAQuery:
    """Parse a decoded HA3 query string. A leading clause without ``name=`` is the query
    clause (the console's Query Test page form: ``vector:'...'&&kvpairs=...``)."""
    if not isinstance(text, str):
        raise QueryError("query must be a string", "query offset 0")
    if not text.strip():
        raise _err("empty query string", 0)
    q = HAQuery(text=text)
    seen: set[str] = set()
    for segment, offset in _split_clauses(text):
        if not segment.strip():
            continue  # tolerate a trailing or doubled &&
        m = re.match(r"\s*([A-Za-z_]+)\s*=", segment)
        name = m.group(1).lower() if m else None
        if name in CLAUSES:
            value_offset = offset + m.end()
            value = segment[m.end():]
        elif m is None or "'" in segment[: m.end()]:
            name, value_offset, value = "query", offset, segment
        else:
            raise _err(f"unknown clause {m.group(1)!r} (expected one of {', '.join(CLAUSES)})", offset)
        if name in seen:
            raise _err(f"clause {name!r} given twice", offset)
        seen.add(name)
        q.offsets[name] = value_offset
        _CLAUSE_PARSERS[name](q, value, value_offset)
    if q.query is None:
        raise _err("missing query clause (query=INDEX:'...')", 0)
    return q


# -- key:value lists (config, kvpairs, distinct, aggregate) --------------------------


def _split_top(text: str, sep: str, offset: int) -> list[tuple[str, int]]:
    """Split on ``sep`` outside parentheses and quotes."""
    out: list[tuple[str, int]] = []
    depth = 0
    quote: str | None = None
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append((text[start:i], offset + start))
            start = i + 1
    out.append((text[start:], offset + start))
    return out


def _kv_pairs(text: str, offset: int, clause: str) -> list[tuple[str, str, int]]:
    pairs = []
    for item, at in _split_top(text, ",", offset):
        if not item.strip():
            continue
        if ":" not in item:
            raise _err(f"{clause}: expected key:value, got {item.strip()!r}", at)
        key, value = item.split(":", 1)
        pairs.append((key.strip(), value.strip(), at))
    return pairs


def _int(value: str, what: str, at: int, minimum: int = 0) -> int:
    try:
        n = int(value)
    except ValueError:
        raise _err(f"{what} must be an integer, got {value!r}", at) from None
    if n < minimum:
        raise _err(f"{what} must be >= {minimum}, got {n}", at)
    return n


def _parse_config(q: HAQuery, text: str, offset: int) -> None:
    c = q.config
    for key, value, at in _kv_pairs(text, offset, "config"):
        k = key.lower()
        if k == "start":
            c.start = _int(value, "config start", at)
        elif k == "hit":
            c.hit = _int(value, "config hit", at)
            if c.hit > MAX_N:
                raise _err(f"config hit must be <= {MAX_N}, got {c.hit}", at)
        elif k == "format":
            if value.lower() not in ("json", "fulljson", "xml"):
                raise _err(f"config format must be json, fulljson or xml, got {value!r}", at)
            c.format = value.lower()  # type: ignore[assignment]
        elif k == "fetch_summary_type":
            if value.lower() not in ("pk", "docid"):
                raise _err(f"config fetch_summary_type must be pk or docid, got {value!r}", at)
            c.fetch_summary_type = value.lower()  # type: ignore[assignment]
        elif k == "qrs_chain":
            c.qrs_chain = value
        elif k == "timeout":
            c.timeout_ms = _int(value, "config timeout", at)
        elif k == "rerank_size":
            c.rerank_size = _int(value, "config rerank_size", at)
        else:
            c.extra[key] = value


def _parse_kvpairs(q: HAQuery, text: str, offset: int) -> None:
    for key, value, _ in _kv_pairs(text, offset, "kvpairs"):
        q.kvpairs[key] = value


def _parse_cluster(q: HAQuery, text: str, offset: int) -> None:
    name = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise _err(f"cluster must be a name, got {name!r}", offset)
    q.cluster = name


def _parse_distinct(q: HAQuery, text: str, offset: int) -> None:
    key = None
    d = DistinctClause(key="")
    for k, value, at in _kv_pairs(text, offset, "distinct"):
        if k == "dist_key":
            key = value
        elif k == "dist_count":
            d.count = _int(value, "distinct dist_count", at, 1)
        elif k == "dist_times":
            d.times = _int(value, "distinct dist_times", at, 1)
        else:
            d.extra[k] = value
    if not key:
        raise _err("distinct needs dist_key", offset)
    d.key = key
    q.distinct = d


_AGG_FUN = re.compile(r"\s*(count|sum|min|max|avg)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)?\s*\)\s*$", re.I)


def _parse_aggregate(q: HAQuery, text: str, offset: int) -> None:
    for part, part_at in _split_top(text, ";", offset):
        if not part.strip():
            continue
        agg = AggregateClause(group_key="")
        for k, value, at in _kv_pairs(part, part_at, "aggregate"):
            if k == "group_key":
                agg.group_key = value
            elif k == "agg_fun":
                funcs = []
                for fn in value.split("#"):
                    m = _AGG_FUN.match(fn)
                    if not m:
                        raise _err(f"aggregate agg_fun: unsupported function {fn!r} "
                                   "(count(), sum(f), min(f), max(f), avg(f))", at)
                    func, arg = m.group(1).lower(), m.group(2)
                    if (func == "count") != (arg is None):
                        raise _err(f"aggregate agg_fun: {fn!r} takes {'no' if func == 'count' else 'one'} field", at)
                    funcs.append(AggFunSpec(func, arg))
                agg.funcs = funcs
            elif k == "max_group":
                agg.max_group = _int(value, "aggregate max_group", at, 1)
            else:
                agg.extra[k] = value
        if not agg.group_key:
            raise _err("aggregate needs group_key", part_at)
        q.aggregates.append(agg)


def _parse_sort(q: HAQuery, text: str, offset: int) -> None:
    q.sort = parse_sort(text, offset)


def parse_sort(text: str, offset: int = 0) -> list[SortKey]:
    """``+RANK;-price``: ``+`` ascending (default), ``-`` descending. A leading space is a
    ``+`` that a form decoder turned into a space."""
    keys = []
    for item, at in _split_top(text, ";", offset):
        if not item.strip():
            continue
        m = re.fullmatch(r"(\s*)([+-]?)\s*([A-Za-z_][A-Za-z0-9_]*)\s*", item)
        if not m:
            raise _err(f"sort: expected [+|-]field, got {item.strip()!r}", at)
        name = m.group(3)
        keys.append(SortKey(field=RANK if name.upper() == RANK else name, descending=m.group(2) == "-"))
    if not keys:
        raise _err("sort: no sort keys", offset)
    return keys


# -- the query clause: INDEX:'PAYLOAD&k=v...' ---------------------------------------

_TERM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*:\s*'")


def _parse_query(q: HAQuery, text: str, offset: int) -> None:
    m = _TERM.match(text)
    if not m:
        raise _err("query: expected INDEX:'PAYLOAD&n=...' (a vector term)", offset)
    body_start = m.end()
    close = text.find("'", body_start)
    if close < 0:
        raise _err("query: unbalanced single quote", offset + body_start - 1)
    if text[close + 1:].strip():
        raise _err("query: only one vector term is supported; unexpected text after it",
                   offset + close + 1)
    term = VectorTerm(index=m.group(1), offset=offset + m.start(1))
    body = text[body_start:close]
    body_at = offset + body_start
    payload, params = _split_term_params(body, body_at)
    for key, (value, at) in params.items():
        if key == "n":
            term.n = _int(value, "n", at, 1)
            if term.n > MAX_N:
                raise _err(f"n must be <= {MAX_N}, got {term.n}", at)
        elif key == "sf":
            term.sf = _float(value, "sf", at)
        elif key == "modal":
            if value not in ("text", "image"):
                raise _err(f"modal must be text or image, got {value!r}", at)
            term.modal = value  # type: ignore[assignment]
        elif key == "search_params":
            term.search_params = parse_search_params_json(value, at)
        else:
            term.params[key] = value
    if term.modal:
        term.content = decode_base64(payload, body_at)
        if term.modal == "text":
            try:
                term.content.decode("utf-8")
            except UnicodeDecodeError:
                raise _err("query: Base64 text payload is not UTF-8 text", body_at) from None
    else:
        term.vectors = parse_vectors(payload, body_at)
    q.query = term


def _split_term_params(body: str, at: int) -> tuple[str, dict[str, tuple[str, int]]]:
    """PAYLOAD then ``&key=value`` pairs. ``search_params`` JSON may itself hold ``&``, so
    its value runs to the matching closing brace."""
    amp = body.find("&")
    payload = body if amp < 0 else body[:amp]
    params: dict[str, tuple[str, int]] = {}
    i = len(payload)
    while i < len(body):
        i += 1  # skip '&'
        eq = body.find("=", i)
        nxt = body.find("&", i)
        if eq < 0 or (0 <= nxt < eq):
            end = len(body) if nxt < 0 else nxt
            raise _err(f"query: expected key=value, got {body[i:end]!r}", at + i)
        key = body[i:eq].strip()
        vstart = eq + 1
        if key == "search_params" and body[vstart:vstart + 1] == "{":
            vend = _json_object_end(body, vstart, at)
        else:
            vend = body.find("&", vstart)
            vend = len(body) if vend < 0 else vend
        if key in params:
            raise _err(f"query: parameter {key!r} given twice", at + i)
        params[key] = (body[vstart:vend].strip(), at + vstart)
        i = vend
    return payload, params


def _json_object_end(body: str, start: int, at: int) -> int:
    depth = 0
    in_str = False
    i = start
    while i < len(body):
        ch = body[i]
        if in_str:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise _err("search_params: unbalanced braces", at + start)


def parse_search_params_json(value: str, at: int = 0) -> dict[str, Any]:
    if not value.strip():
        return {}
    try:
        data = safejson.loads(value, max_depth=SEARCH_PARAMS_DEPTH)
    except safejson.JsonError as exc:
        raise _err(f"search_params is not valid JSON: {exc.msg}", at + exc.pos) from None
    if not isinstance(data, dict):
        raise _err("search_params must be a JSON object", at)
    return data


def _float(value: str, what: str, at: int) -> float:
    try:
        x = float(value)
    except ValueError:
        raise _err(f"{what} must be a number, got {value!r}", at) from None
    problem = score_problem(x)
    if problem:
        raise _err(f"{what} {problem}, got {value!r}", at)
    return x


def parse_vectors(payload: str, at: int, delimiter: str = ",") -> list[list[float]]:
    """``0.1,0.2;0.3,0.4``: ``;`` separates query vectors. Delimiters ``,`` and space both
    accepted (HA3's embedding_delimiter is ``,`` by default)."""
    if payload.count(";") >= MAX_QUERY_VECTORS:
        raise _err(f"query: more than {MAX_QUERY_VECTORS} query vectors; that is the limit per request", at)
    vectors = []
    pos = 0
    for chunk in payload.split(";"):
        chunk_at = at + pos
        pos += len(chunk) + 1
        if not chunk.strip():
            continue
        if delimiter in (",", " "):
            items = [x for x in re.sub(r"\s", ",", chunk.strip()).split(",") if x]
        else:
            items = [x for x in chunk.strip().split(delimiter) if x]
        try:
            arr = np.asarray(items, dtype=np.float64)  # C-speed conversion of 512 strings
        except ValueError:
            bad = next(x for x in items if not _is_float(x))
            raise _err(f"query: vector element {bad!r} is not a number (text or image "
                       "content needs &modal=text|image and Base64)", chunk_at) from None
        if not np.isfinite(arr).all():
            bad = items[int(np.flatnonzero(~np.isfinite(arr))[0])]
            raise _err(f"query: vector element {bad!r} is not finite", chunk_at)
        problem = vectors_problem(arr)
        if problem:
            raise _err(f"query: vector {problem}", chunk_at)
        vectors.append(arr.tolist())
    if not vectors:
        raise _err("query: empty vector payload", at)
    dims = {len(v) for v in vectors}
    if len(dims) > 1:
        raise _err(f"query: query vectors have different lengths {sorted(dims)}", at)
    return vectors


def _is_float(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def decode_base64(payload: str, at: int = 0) -> bytes:
    """The service's Base64 rule (adapter.base64text); spaces read as ``+`` (form-decoded)."""
    try:
        return base64text.decode_base64(payload.replace(" ", "+"))
    except base64text.EmptyBase64:
        raise _err("query: empty Base64 payload", at) from None
    except base64text.Base64Error:
        raise _err("query: payload is not valid Base64", at) from None


# -- filter expressions ---------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<comma>,)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
""", re.X)


@dataclass
class _Tok:
    kind: str
    text: str
    at: int


def _tokenize(text: str, offset: int) -> list[_Tok]:
    toks = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m:
            raise _err(f"filter: unexpected character {text[i]!r}", offset + i)
        kind = m.lastgroup
        if kind != "ws":
            value = m.group()
            if kind == "ident" and value.upper() in ("AND", "OR", "NOT"):
                kind = value.upper()
            toks.append(_Tok(kind, value, offset + i))
        i = m.end()
    toks.append(_Tok("end", "", offset + len(text)))
    return toks


# Filter size limits: recursion stays shallow, and the SQL an engine builds from a filter
# stays inside SQLite's expression depth (1000) and OpenSearch's clause count (1024).
MAX_FILTER_CHARS = 100_000
MAX_FILTER_DEPTH = 32  # parentheses and NOTs
MAX_FILTER_TERMS = 256  # comparisons and in()/notin() lists
MAX_FILTER_VALUES = 10_000  # values in all in()/notin() lists together


class _FilterParser:
    """or := and (OR and)* ; and := not (AND not)* ; not := NOT not | atom ;
    atom := '(' or ')' | in/notin '(' field ',' string ')' | operand op operand."""

    def __init__(self, text: str, offset: int):
        if len(text) > MAX_FILTER_CHARS:
            raise _err(f"filter: longer than {MAX_FILTER_CHARS} characters", offset)
        self.toks = _tokenize(text, offset)
        self.i = 0
        self.depth = 0
        self.terms = 0
        self.values = 0

    def nested(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise _err(f"filter: nested deeper than {MAX_FILTER_DEPTH} levels", tok.at)

    def counted(self, tok: _Tok, values: int = 0) -> None:
        self.terms += 1
        self.values += values
        if self.terms > MAX_FILTER_TERMS:
            raise _err(f"filter: more than {MAX_FILTER_TERMS} conditions", tok.at)
        if self.values > MAX_FILTER_VALUES:
            raise _err(f"filter: more than {MAX_FILTER_VALUES} values in in()/notin() lists", tok.at)

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self, kind: str, what: str) -> _Tok:
        tok = self.peek()
        if tok.kind != kind:
            got = tok.text or "end of filter"
            raise _err(f"filter: expected {what}, got {got!r}", tok.at)
        self.i += 1
        return tok

    def parse(self) -> FilterExpr:
        expr = self.or_()
        tok = self.peek()
        if tok.kind != "end":
            raise _err(f"filter: unexpected {tok.text!r}", tok.at)
        return expr

    def or_(self) -> FilterExpr:
        items = [self.and_()]
        while self.peek().kind == "OR":
            self.i += 1
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(items=items)

    def and_(self) -> FilterExpr:
        items = [self.not_()]
        while self.peek().kind == "AND":
            self.i += 1
            items.append(self.not_())
        return items[0] if len(items) == 1 else And(items=items)

    def not_(self) -> FilterExpr:
        tok = self.peek()
        if tok.kind == "NOT":
            self.i += 1
            self.nested(tok)
            item = self.not_()
            self.depth -= 1
            return Not(item=item)
        return self.atom()

    def atom(self) -> FilterExpr:
        tok = self.peek()
        if tok.kind == "lp":
            self.i += 1
            self.nested(tok)
            expr = self.or_()
            self.take("rp", "')'")
            self.depth -= 1
            return expr
        if tok.kind == "ident" and tok.text.lower() in ("in", "notin") and self.toks[self.i + 1].kind == "lp":
            self.i += 2
            fld = self.take("ident", "a field name").text
            self.take("comma", "','")
            s = self.take("str", "a quoted value list like \"1|2\"")
            self.take("rp", "')'")
            values = [_literal_value(v.strip()) for v in _unquote(s.text).split("|") if v.strip()]
            if not values:
                raise _err("filter: empty value list", s.at)
            self.counted(tok, len(values))
            return InList(field=fld, values=values, negate=tok.text.lower() == "notin")
        self.counted(tok)
        left = self.operand()
        op = self.take("op", "a comparison operator (= != < > <= >=)")
        right = self.operand()
        opv = "!=" if op.text == "<>" else op.text
        if left[0] == "field" and right[0] == "value":
            return Compare(field=left[1], op=opv, value=right[1])
        if left[0] == "value" and right[0] == "field":
            flipped = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(opv, opv)
            return Compare(field=right[1], op=flipped, value=left[1])
        raise _err("filter: a comparison needs one field and one literal value", op.at)

    def operand(self) -> tuple[str, Any]:
        tok = self.peek()
        self.i += 1
        if tok.kind == "ident":
            return ("field", tok.text)
        if tok.kind == "num":
            return ("value", _number(tok.text))
        if tok.kind == "str":
            return ("value", _unquote(tok.text))
        got = tok.text or "end of filter"
        raise _err(f"filter: expected a field or a value, got {got!r}", tok.at)


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s[1:-1])


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _literal_value(text: str) -> int | float | str:
    try:
        return _number(text)
    except ValueError:
        return text


def parse_filter(text: str, offset: int = 0) -> FilterExpr:
    if not text.strip():
        raise _err("filter: empty expression", offset)
    return _FilterParser(text, offset).parse()


def _parse_filter(q: HAQuery, text: str, offset: int) -> None:
    q.filter = parse_filter(text, offset)


_CLAUSE_PARSERS = {
    "config": _parse_config,
    "query": _parse_query,
    "filter": _parse_filter,
    "sort": _parse_sort,
    "kvpairs": _parse_kvpairs,
    "distinct": _parse_distinct,
    "aggregate": _parse_aggregate,
    "cluster": _parse_cluster,
}
