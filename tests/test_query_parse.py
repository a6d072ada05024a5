"""HA3 query strings → clause tree: the seed's examples, every clause, every bad input."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.errors import QueryError
from urllib.parse import urlencode

from adapter.query.haquery import (decode_base64, decode_raw_query_string, ha_query_from_url_query, parse_filter,
                                   parse_ha_query)
from adapter.plan.tree import RANK, And, Compare, InList, Not, Or, SortKey

SEED_CONSOLE = ("vector:'5pGp5omY6L2mJuWktOeblA==&modal=text&n=10&search_params={}'"
                "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK")
SEED_SDK = ("config=hit:4,format:json,fetch_summary_type:pk,qrs_chain:search&&query=image_index: "
            "'{text}&modal=text&n=10&search_params={{}}'&&cluster=general")


def test_seed_console_example_verbatim():
    q = parse_ha_query(SEED_CONSOLE)
    assert q.query.index == "vector"
    assert q.query.modal == "text" and q.query.n == 10 and q.query.search_params == {}
    # "motorcycle&helmet" in Chinese: the & inside the Base64 text is the point of Base64
    assert q.query.content.decode("utf-8") == "摩托车&头盔"
    assert q.kvpairs == {"formula": "proxima_score(vector)"}
    assert q.sort == [SortKey(field=RANK, descending=False)]
    assert q.cluster is None and q.config.hit == 10 and q.config.format == "json"


def test_seed_sdk_example_verbatim():
    text = base64.b64encode("The text used for image search".encode()).decode()
    q = parse_ha_query(SEED_SDK.format(text=text))
    c = q.config
    assert (c.hit, c.format, c.fetch_summary_type, c.qrs_chain) == (4, "json", "pk", "search")
    assert q.query.index == "image_index"  # the SDK sample's space after the colon
    assert q.query.content == b"The text used for image search"
    assert q.cluster == "general"


def test_seed_image_example_with_real_base64_image():
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
    b64 = base64.b64encode(png).decode()
    assert "+" in b64 and "/" in b64
    q = parse_ha_query(f"vector: '{b64}&modal=image&n=10&search_params={{}}'"
                       "&&kvpairs=formula:proxima_score(vector)&&sort=+RANK")
    assert q.query.modal == "image" and q.query.content == png


@pytest.mark.parametrize("variant", ["standard", "urlsafe", "nopad", "plus_as_space"])
def test_base64_variants(variant):
    data = bytes(range(250, 256)) + b"\xfb\xff\xfe"  # produces + and / in standard Base64
    std = base64.b64encode(data).decode()
    s = {"standard": std, "urlsafe": base64.urlsafe_b64encode(data).decode(),
         "nopad": std.rstrip("="), "plus_as_space": std.replace("+", " ")}[variant]
    assert decode_base64(s) == data


@pytest.mark.parametrize("bad", ["a", "abcde", "ab!d", "====", "ab==c", ""])
def test_bad_base64(bad):
    with pytest.raises(QueryError):
        decode_base64(bad)


def test_numeric_vectors_several_and_params():
    q = parse_ha_query("query=vec:'0.1,0.2,-3e-1;1,2,3&n=5&sf=0.75&search_params="
                       "{\"proxima.hnsw.searcher.ef\":64,\"note\":\"a&b\"}&foo=bar'&&config=start:2,hit:3,"
                       "format:fulljson,timeout:500,rerank_size:50,custom:x")
    t = q.query
    assert t.vectors == [[0.1, 0.2, -0.3], [1.0, 2.0, 3.0]]
    assert t.n == 5 and t.sf == 0.75 and t.params == {"foo": "bar"}
    assert t.search_params == {"proxima.hnsw.searcher.ef": 64, "note": "a&b"}
    c = q.config
    assert (c.start, c.hit, c.format, c.timeout_ms, c.rerank_size, c.extra) == (2, 3, "fulljson", 500, 50, {"custom": "x"})


def test_sort_distinct_aggregate_kvpairs():
    q = parse_ha_query("query=v:'1,2'&&sort=-price;+RANK;cate_id&&distinct=dist_key:cate_id,dist_count:2,"
                       "dist_times:1,reserved:false&&aggregate=group_key:cate_id,agg_fun:count()#sum(price)#max(price),"
                       "max_group:5;group_key:brand,agg_fun:avg(price)&&kvpairs=formula:proxima_score(v),a:b")
    assert q.sort == [SortKey(field="price", descending=True), SortKey(field=RANK), SortKey(field="cate_id")]
    assert (q.distinct.key, q.distinct.count, q.distinct.times, q.distinct.extra) == ("cate_id", 2, 1, {"reserved": "false"})
    a, b = q.aggregates
    assert a.group_key == "cate_id" and a.max_group == 5
    assert [(f.func, f.field) for f in a.funcs] == [("count", None), ("sum", "price"), ("max", "price")]
    assert b.group_key == "brand" and [(f.func, f.field) for f in b.funcs] == [("avg", "price")]
    assert q.kvpairs == {"formula": "proxima_score(v)", "a": "b"}


def test_sort_plus_turned_into_space_by_a_form_decoder():
    q = parse_ha_query("query=v:'1,2'&&sort= RANK")
    assert q.sort == [SortKey(field=RANK, descending=False)]


def test_raw_query_string_decoded_once():
    raw = "query=v:'5pGp5omY6L2mJuWktOeblA%3D%3D%26modal%3Dtext'&&sort=%2BRANK&&filter=name=%22a%2525b%22"
    text = decode_raw_query_string(raw)
    q = parse_ha_query(text)
    assert q.query.content.decode() == "摩托车&头盔"
    assert q.filter == Compare(field="name", op="=", value="a%25b")  # decoded once, not twice


def test_url_query_shapes_sdk_and_native():
    text = SEED_SDK.format(text="Pz8+Pz8/") + "&&sort=+RANK&&filter=brand=\"a b\""
    # the SDK (Tea) sends GET /query?<urlencode({"query": text})>: form encoding
    assert ha_query_from_url_query(urlencode({"query": text})) == text
    # HA3's native URL: the clauses themselves, && literal, + literal
    native = "config=hit:4&&query=v:'Pz8+Pz8%2F&modal=text'&&sort=+RANK&&filter=brand=%22a%20b%22"
    q = parse_ha_query(ha_query_from_url_query(native))
    assert q.query.content == b"??>???"
    assert q.sort == [SortKey(field=RANK)] and q.filter == Compare(field="brand", op="=", value="a b")
    assert parse_ha_query(ha_query_from_url_query("query=v:'1,2'")).query.vectors == [[1.0, 2.0]]
    with pytest.raises(QueryError):
        ha_query_from_url_query("")
    with pytest.raises(QueryError):
        ha_query_from_url_query("query=%ff%fe")
    # pairs the HTTP layer already parsed are used as they are; a lenient parse of bad bytes
    # (U+FFFD) does not slip through
    sdk = urlencode({"query": text})
    assert ha_query_from_url_query(sdk, [("query", "parsed")]) == "parsed"
    with pytest.raises(QueryError, match="not valid percent-encoded UTF-8"):
        ha_query_from_url_query("query=%ff%fe", [("query", "\ufffd\ufffd")])


def test_filter_grammar():
    f = parse_filter('a = 1 and (b != "x y" OR NOT c >= 2.5) AND in(d, "1|2|3") or notin(e, "p|q") and 3 < f')
    assert f == Or(items=[
        And(items=[Compare(field="a", op="=", value=1),
                   Or(items=[Compare(field="b", op="!=", value="x y"),
                             Not(item=Compare(field="c", op=">=", value=2.5))]),
                   InList(field="d", values=[1, 2, 3])]),
        And(items=[InList(field="e", values=["p", "q"], negate=True),
                   Compare(field="f", op=">", value=3)]),
    ])
    assert parse_filter("x<>-1.5e2") == Compare(field="x", op="!=", value=-150.0)
    assert parse_filter("name='it'") == Compare(field="name", op="=", value="it")
    q = parse_ha_query("query=v:'1'&&filter=title=\"it's && more\" AND a=1&&sort=-a")
    assert q.filter == And(items=[Compare(field="title", op="=", value="it's && more"),
                                  Compare(field="a", op="=", value=1)])
    assert q.sort == [SortKey(field="a", descending=True)]


BAD_QUERIES = [
    ("", 0),
    ("query=v:'1,2", 8),                      # unbalanced quote
    ("query=v:'1,2'&&filter=(a=1", 26),       # unbalanced paren → end of filter
    ("query=v:'1,2'&&filter=a=1)", 25),
    ("query=v:'1,2'&&filter=a==1", 24),
    ("query=v:'1,2'&&filter=a=1 AND", 29),
    ("query=v:'1,2'&&filter=a=b", 23),
    ("query=v:'1,2'&&filter=a=1 # 2", 26),
    ("query=v:'1,2'&&filter=a=\"x", 24),      # unbalanced double quote
    ("query=v:'1,2'&&filter=in(a, 1)", 28),
    ("query=v:'1,x'", 9),
    ("query=v:'1,2;3'", 9),
    ("query=v:'//8&modal=text'", 9),           # valid Base64, but not UTF-8 text
    ("query=v:'@@@@&modal=text'", 9),
    ("query=v:'1,2&n=0'", 15),
    ("query=v:'1,2&n=-3'", 15),
    ("query=v:'1,2&n=10001'", 15),
    ("query=v:'1,2&n=ten'", 15),
    ("query=v:'1,2&sf=abc'", 16),
    ("query=v:'1,2&modal=audio'", 19),
    ("query=v:'1,2&search_params={\"a\":'", 27),
    ("query=v:'1,2&search_params=[1]'", 27),
    ("query=v:'1,2&search_params={bad}'", 28),
    ("query=v:'1,2&n'", 13),
    ("query=v:'1,2' AND x:'1'", 13),
    ("query=v:'1,2'&&config=hit:abc", 22),
    ("query=v:'1,2'&&config=format:yaml", 22),
    ("query=v:'1,2'&&config=fetch_summary_type:all", 22),
    ("query=v:'1,2'&&config=hit", 22),
    ("query=v:'1,2'&&sort=", 20),
    ("query=v:'1,2'&&sort=+a b", 20),
    ("query=v:'1,2'&&distinct=dist_count:1", 24),
    ("query=v:'1,2'&&distinct=dist_key:a,dist_count:0", 35),
    ("query=v:'1,2'&&aggregate=agg_fun:count()", 25),
    ("query=v:'1,2'&&aggregate=group_key:a,agg_fun:median(b)", 37),
    ("query=v:'1,2'&&aggregate=group_key:a,agg_fun:sum()", 37),
    ("query=v:'1,2'&&cluster=a b", 23),
    ("query=v:'1,2'&&bogus=1", 15),
    ("query=v:'1,2'&&query=v:'1,2'", 15),
    ("config=hit:1", 0),                        # no query clause
    ("query=nonsense", 6),
]


@pytest.mark.parametrize("text,offset", BAD_QUERIES)
def test_bad_queries_give_located_query_errors(text, offset):
    with pytest.raises(QueryError) as info:
        parse_ha_query(text)
    err = info.value
    assert err.location == f"query offset {offset}", (err.message, err.location)
    assert err.code == 2001 and err.to_dict()["message"]


def test_non_string_input():
    with pytest.raises(QueryError):
        parse_ha_query(None)  # type: ignore[arg-type]


# -- property: random and mutated strings only ever raise QueryError ------------------

VALID = [
    SEED_CONSOLE,
    SEED_SDK.format(text="VGV4dA=="),
    "config=start:1,hit:5,format:xml&&query=vec:'0.1,0.2;0.3,0.4&n=3&sf=1.5&search_params="
    "{\"proxima.qc.searcher.scan_ratio\":0.1}'&&filter=(a=1 OR b!=\"x\") AND NOT in(c,\"1|2\")"
    "&&sort=-a;+RANK&&distinct=dist_key:a,dist_count:1&&aggregate=group_key:a,agg_fun:count()#sum(b)",
]
ALPHABET = "&=:'\"(),;|+-#{}[] \\%abcnqvx019.=AND OR NOT in notin RANK"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list(ALPHABET)) | st.characters(), max_size=120))
def test_random_strings_raise_only_query_error(text):
    try:
        parse_ha_query(text)
    except QueryError:
        pass


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 6),
                                                  st.text(alphabet=ALPHABET, max_size=4)), max_size=4))
def test_mutated_queries_raise_only_query_error(base, edits):
    text = base
    for pos, cut, insert in edits:
        pos %= len(text) + 1
        text = text[:pos] + insert + text[pos + cut:]
    try:
        q = parse_ha_query(text)
    except QueryError as exc:
        assert re.fullmatch(r"query offset \d+", exc.location or ""), exc.location
        assert int(exc.location.split()[-1]) <= len(text)
    else:
        assert q.query is not None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="a&'\" =", max_size=30))
def test_clause_split_tokens_match_the_plain_alternation(text):
    """_SPLIT_TOKENS is a faster spelling of ``&&|['"]`` (lone "&" skipped): same tokens, same places."""
    from adapter.query.haquery import _SPLIT_TOKENS

    fast = [(m.group(), m.start()) for m in _SPLIT_TOKENS.finditer(text) if m.group() != "&"]
    assert fast == [(m.group(), m.start()) for m in re.finditer(r"&&|['\"]", text)]


def _split_char_by_char(text: str):
    """Reference for _split_clauses: one character at a time, no regex, no jumps."""
    parts, start, quote, quote_at, i = [], 0, None, None, 0
    while i < len(text):
        c = text[i]
        if quote is not None:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote, quote_at = c, i
        elif text.startswith("&&", i):
            parts.append((text[start:i], start))
            start = i + 2
            i += 2
            continue
        i += 1
    if quote is not None:
        return ("unbalanced", quote_at)
    return parts + [(text[start:], start)]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="a&'\" =", max_size=40))
def test_clause_split_matches_a_char_by_char_scan(text):
    """Jumping from a quote to its closing twin splits exactly as walking every character."""
    from adapter.query.haquery import _split_clauses

    expected = _split_char_by_char(text)
    try:
        got = _split_clauses(text)
    except QueryError as exc:
        assert expected[0] == "unbalanced", (text, exc)
        assert exc.location == f"query offset {expected[1]}"
    else:
        assert got == expected
