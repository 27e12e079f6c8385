"""The ledger's verdicts: each way a response can break the "nothing lost" contract is counted as that failure, and
each way it can keep it is not."""

import asyncio
import json

import httpx
import pytest

from cluster.reliability import ledger
from cluster.reliability.ledger import Ledger, send

CHUNK = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
LAST = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
ERROR = {"error": {"message": "the model stopped", "type": "server_error", "code": "unavailable"}}
ANSWER = {"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]}


def sse(*events: object) -> bytes:
    return b"".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events)


def reply(status: int, content: bytes, stream: bool = False, headers: dict | None = None):
    async def handler(_: httpx.Request) -> httpx.Response:
        kind = "text/event-stream" if stream else "application/json"
        return httpx.Response(status, content=content, headers={"content-type": kind, **(headers or {})})
    return handler


async def verdict(handler, stream: bool = False, deadline_s: float = 5, **options) -> ledger.Entry:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://router") as client:
        return await send(client, {"model": "auto", "stream": stream}, deadline_s, **options)


@pytest.mark.parametrize("content, kind", [
    (sse(CHUNK, LAST, "[DONE]"), "completed"),
    (sse(CHUNK, ERROR, "[DONE]"), "clean_error"),
    (sse(CHUNK, CHUNK), "truncated_stream"),  # no [DONE]
    (sse(CHUNK, "[DONE]"), "truncated_stream"),  # [DONE] without a finish reason or an error
    (sse(CHUNK, LAST, "[DONE]", CHUNK), "truncated_stream"),  # data after [DONE]
    (sse(CHUNK, LAST, LAST, "[DONE]"), "server_error"),  # two answers to one request
    (sse(ERROR, ERROR, "[DONE]"), "server_error"),
])
def test_streams_are_judged_by_how_they_end(content: bytes, kind: str):
    assert asyncio.run(verdict(reply(200, content, stream=True), stream=True)).kind == kind


@pytest.mark.parametrize("status, content, headers, kind, missing", [
    (200, json.dumps(ANSWER).encode(), {}, "completed", False),
    (200, json.dumps({"choices": [{"message": {}, "finish_reason": None}]}).encode(), {}, "server_error", False),
    (400, json.dumps({"error": {"message": "bad", "type": "invalid_request_error"}}).encode(), {}, "clean_error", False),
    (503, json.dumps(ERROR).encode(), {"retry-after": "5"}, "clean_error", False),
    (503, json.dumps(ERROR).encode(), {}, "clean_error", True),
    (500, json.dumps({"error": {"message": "bug", "type": "server_error"}}).encode(), {}, "server_error", False),
    (500, b"Internal Server Error", {}, "server_error", False),
    (502, json.dumps({"detail": "bad gateway"}).encode(), {}, "server_error", False),
])
def test_whole_responses_are_judged_by_status_and_body(status, content, headers, kind, missing):
    entry = asyncio.run(verdict(reply(status, content, headers=headers)))
    assert (entry.kind, entry.missing_retry_after) == (kind, missing)


def test_a_reset_and_a_hang_are_lost(monkeypatch):
    async def reset(_: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection")

    async def hang(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    monkeypatch.setattr(ledger, "GRACE_S", 0.2)
    assert asyncio.run(verdict(reset)).kind == "lost"
    entry = asyncio.run(verdict(hang, deadline_s=0.1))
    assert entry.kind == "lost" and "deadline" in entry.detail


def test_a_client_that_leaves_a_well_formed_stream_is_not_a_failure():
    entry = asyncio.run(verdict(reply(200, sse(CHUNK, CHUNK, CHUNK), stream=True), stream=True, read_events=2))
    assert entry.kind == "completed"


def test_summary_counts_by_kind_and_windows_by_send_time():
    book = Ledger()
    for kind, at in [("completed", 1.0), ("lost", 2.0), ("clean_error", 3.0)]:
        book.add(ledger.Entry(kind, None, False, at, 0.1))
    assert book.summary()["lost"] == 1 and book.summary()["accepted"] == 3
    assert book.since(2.0, 3.0).summary()["accepted"] == 1 and book.since(2.5).summary()["clean_errors"] == 1
