"""The OpenSearch retry policy and error mapping (adapter/engines/opensearch_transport.py),
against a client whose answers each test scripts: what is retried, what is not, and what the
caller sees at the end."""

from __future__ import annotations

import pytest
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import ConnectionTimeout, TransportError
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from adapter.engines.opensearch_transport import RetryPolicy, Transport, require_all_shards
from adapter.errors import EngineError, EngineUnavailableError, NotFoundError


class ScriptedClient:
    """``client.transport.perform_request`` answers from a list: a value, or an exception to raise."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = 0
        self.transport = self

    def perform_request(self, method, path, params=None, body=None):
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def transport(client, max_retries=4, deadline_s=60.0):
    clock = Clock()
    return Transport(client, RetryPolicy(max_retries=max_retries, backoff_s=0.5, deadline_s=deadline_s),
                     sleep=clock.sleep, clock=lambda: clock.now), clock


def status(code: int, kind: str = "error") -> TransportError:
    return TransportError(code, kind, {"error": {"type": kind, "reason": f"{kind} reason",
                                                 "root_cause": [{"type": kind, "reason": f"{kind} root"}]}})


def refused_connection() -> OSConnectionError:
    return OSConnectionError("N/A", "refused", NewConnectionError(None, "Connection refused"))


def read_timeout() -> ConnectionTimeout:
    return ConnectionTimeout("TIMEOUT", "read timed out", ReadTimeoutError(None, "/x", "read timed out"))


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.parametrize("first", [status(429, "es_rejected_execution_exception"),
                                   status(503, "cluster_block_exception"), refused_connection()],
                         ids=["429", "503", "refused"])
def test_refused_or_never_sent_requests_are_retried_whatever_they_are(first, idempotent):
    client = ScriptedClient(first, {"ok": 1})
    t, clock = transport(client)
    assert t.call("PUT", "/idx", {}, idempotent=idempotent) == {"ok": 1}
    assert client.calls == 2 and clock.sleeps == [0.5]


@pytest.mark.parametrize("first", [status(500, "null_pointer_exception"), status(502), status(504), read_timeout(),
                                   OSConnectionError("N/A", "reset", ConnectionResetError())],
                         ids=["500", "502", "504", "read-timeout", "reset"])
def test_failures_that_may_have_been_applied_are_retried_only_when_idempotent(first):
    client = ScriptedClient(first, {"ok": 1})
    t, _ = transport(client)
    assert t.call("POST", "/idx/_search", {}) == {"ok": 1} and client.calls == 2

    client = ScriptedClient(first, {"ok": 1})
    t, clock = transport(client)
    with pytest.raises(EngineError) as info:
        t.call("POST", "/_aliases", {}, idempotent=False)
    assert client.calls == 1 and clock.sleeps == []
    assert not isinstance(info.value, EngineUnavailableError) or isinstance(first, OSConnectionError)


def test_giving_up_on_an_unavailable_cluster_is_a_503_naming_the_cause():
    client = ScriptedClient(*[status(503, "no_shard_available_action_exception")] * 5)
    t, clock = transport(client)
    with pytest.raises(EngineUnavailableError, match="after 5 tries: no_shard_available_action_exception") as info:
        t.call("POST", "/idx/_search", {})
    assert info.value.http_status == 503 and clock.sleeps == [0.5, 1.0, 2.0, 4.0]


def test_the_deadline_stops_retries_before_max_retries():
    client = ScriptedClient(*[refused_connection()] * 10)
    t, clock = transport(client, max_retries=9, deadline_s=3.0)
    with pytest.raises(EngineUnavailableError, match="after 3 tries"):
        t.call("GET", "/idx/_count")
    assert clock.sleeps == [0.5, 1.0] and clock.now <= 3.0


def test_rejections_are_not_retried_and_name_the_root_cause():
    client = ScriptedClient(status(400, "search_phase_execution_exception"))
    t, clock = transport(client)
    with pytest.raises(EngineError, match="search_phase_execution_exception: search_phase_execution_exception root"):
        t.call("POST", "/idx/_search", {})
    assert client.calls == 1 and clock.sleeps == []
    t, _ = transport(ScriptedClient(status(404, "index_not_found_exception")))
    with pytest.raises(NotFoundError, match="table 't' does not exist"):
        t.call("GET", "/t/_mapping", not_found=NotFoundError, what="table 't' does not exist")


def test_partial_answers_are_refused():
    complete = {"_shards": {"total": 3, "successful": 3, "failed": 0}, "hits": {"hits": []}}
    assert require_all_shards(complete, "search") is complete
    partial = {"_shards": {"total": 3, "successful": 2, "failed": 1, "failures": [
        {"shard": 1, "reason": {"type": "node_not_connected_exception", "reason": "node-2 left"}}]}}
    with pytest.raises(EngineUnavailableError, match="1 of 3 shards failed.*node_not_connected_exception: node-2 left"):
        require_all_shards(partial, "search of 't'")
    with pytest.raises(EngineUnavailableError, match="timed out"):
        require_all_shards({"timed_out": True, "_shards": {"total": 1, "failed": 0}}, "search")
