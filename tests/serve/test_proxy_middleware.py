"""The proxy middleware against stand-ins for Ray's proxy app that behave as it does when a router replica dies under a
request (it returns or raises without finishing the response). The real kill is the fault tier's
`ingress_replica_killed` (tests/cluster/test_reliability_tiny.py)."""

import asyncio
import json

import pytest

from serve import proxy_middleware
from serve.proxy_middleware import ReplicaLossGuard

BODY = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'
RAY_REFUSAL = b"Request dropped due to backpressure (num_queued_requests=64, max_queued_requests=64)."
SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


class ProxyStandIn:
    """Ray's proxy app, scripted per attempt: 'dies' (returns, nothing sent), 'raises', 'answers', 'streams then dies',
    'refuses' (Ray's plain-text 503), 'router refuses' (the router's JSON 503)."""

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.bodies: list[bytes] = []
        self.refusal_headers: list[tuple[bytes, bytes]] = []
        self.refusal_text = RAY_REFUSAL

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        step = self.script.pop(0)
        if step == "raises":
            raise RuntimeError("ActorDiedError: the replica died")
        if step == "answers":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"choices": []}'})
        if step == "refuses":  # as Ray's proxy does when its queue for the router is full (http_util.py)
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"), *self.refusal_headers]})
            await send({"type": "http.response.body", "body": self.refusal_text})
        if step == "router refuses":
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"2")]})
            await send({"type": "http.response.body", "body": b'{"error": {"code": "overloaded"}}'})
        if step == "streams then dies":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": b'data: {"choices": []}\n\n', "more_body": True})


def call(app, chunks=(BODY,), disconnect_first: bool = False) -> list[dict]:
    """Run the guard once over `app`; the messages the client was sent."""
    incoming = [{"type": "http.disconnect"}] if disconnect_first else [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # a client that stays connected sends nothing more

    async def send(message):
        sent.append(message)

    asyncio.run(ReplicaLossGuard(app)(dict(SCOPE), receive, send))
    return sent


def status_and_body(sent: list[dict]) -> tuple[int, bytes, dict]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, {k.decode().lower(): v.decode() for k, v in start["headers"]}


@pytest.mark.parametrize("death", ["dies", "raises"])
def test_a_request_whose_replica_died_before_answering_is_sent_once_more_with_the_same_body(death):
    app = ProxyStandIn(death, "answers")
    sent = call(app, chunks=(BODY[:20], BODY[20:]))
    assert app.bodies == [BODY, BODY]
    assert status_and_body(sent)[:2] == (200, b'{"choices": []}')
    assert sum(m["type"] == "http.response.start" for m in sent) == 1  # one answer, never two


def test_when_the_second_attempt_fails_too_the_client_gets_an_openai_503_with_retry_after():
    app = ProxyStandIn("dies", "raises")
    status, body, headers = status_and_body(call(app))
    assert status == 503 and headers["retry-after"] == "1" and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "unavailable"
    assert len(app.bodies) == proxy_middleware.ATTEMPTS


def test_a_started_stream_that_is_cut_ends_with_one_error_event_and_done_and_is_not_resent():
    app = ProxyStandIn("streams then dies", "answers")
    sent = call(app)
    status, body, _ = status_and_body(sent)
    events = [e for e in body.decode().split("\n\n") if e]
    assert status == 200 and len(app.bodies) == 1
    assert events[0] == 'data: {"choices": []}' and events[-1] == "data: [DONE]"
    assert json.loads(events[1].removeprefix("data: "))["error"]["code"] == "unavailable" and len(events) == 3
    assert sent[-1]["more_body"] is False


def test_a_client_that_left_gets_nothing_and_is_not_resent():
    app = ProxyStandIn("dies", "answers")
    assert call(app, disconnect_first=True) == [] and app.bodies == []


def test_a_body_too_big_to_keep_is_not_resent(monkeypatch):
    monkeypatch.setattr(proxy_middleware, "REPLAY_LIMIT_BYTES", 10)
    app = ProxyStandIn("dies", "answers")
    status, _, _ = status_and_body(call(app))
    assert status == 503 and len(app.bodies) == 1


@pytest.mark.parametrize("ray_retry_after, expected", [(None, "1"), (b"3", "3")])
def test_rays_own_plain_text_503_reaches_the_client_as_an_openai_overloaded_with_retry_after(ray_retry_after, expected):
    app = ProxyStandIn("refuses")
    app.refusal_headers = [(b"Retry-After", ray_retry_after)] if ray_retry_after else []
    sent = call(app)
    status, body, headers = status_and_body(sent)
    error = json.loads(body)["error"]
    assert status == 503 and headers["retry-after"] == expected and headers["content-type"] == "application/json"
    assert error["code"] == "overloaded" and error["type"] == "server_error" and RAY_REFUSAL.decode() in error["message"]
    assert len(app.bodies) == 1 and sum(m["type"] == "http.response.start" for m in sent) == 1  # refused once, not resent


def test_rays_503_for_a_router_that_failed_to_deploy_says_unavailable():
    app = ProxyStandIn("refuses")
    app.refusal_text = b"Deployment(name='router', app='default') is unavailable because it failed to deploy."
    status, body, headers = status_and_body(call(app))
    assert status == 503 and headers["retry-after"] == "1" and json.loads(body)["error"]["code"] == "unavailable"


def test_the_routers_own_json_503_passes_through_untouched():
    status, body, headers = status_and_body(call(ProxyStandIn("router refuses")))
    assert (status, body, headers["retry-after"]) == (503, b'{"error": {"code": "overloaded"}}', "2")


def test_an_answer_passes_through_untouched_and_once():
    app = ProxyStandIn("answers")
    sent = call(app)
    assert app.bodies == [BODY] and status_and_body(sent)[:2] == (200, b'{"choices": []}')


def test_the_import_path_ray_is_given_names_this_hook():
    module, _, name = proxy_middleware.IMPORT_PATH.rpartition(".")
    assert module == proxy_middleware.__name__ and getattr(proxy_middleware, name) is proxy_middleware.middlewares
    assert [m.cls for m in proxy_middleware.middlewares()] == [ReplicaLossGuard]
