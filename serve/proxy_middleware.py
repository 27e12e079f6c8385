"""Ray's HTTP proxy, made to keep the "nothing lost" contract when a router replica dies under a request.

Ray 2.60 retries a request only until a replica accepts it. If the replica dies after that, the proxy sends nothing,
so uvicorn answers a plain-text 500, or cuts a stream that had started (router.py, proxy.py, http_util.py in
ray/serve/_private). This ASGI middleware runs inside Ray's proxy, named by
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` (set by cluster/local.py and the Helm chart's `env`):

- a request whose response had not started is sent once more: Ray's router has marked the dead replica, so it
  reaches a live one. The client gets one answer; the dead replica's engine work may have been spent twice;
- if that fails too, the client gets an OpenAI-style 503 with `Retry-After`;
- a stream that had started ends with one in-band error event and `data: [DONE]`;
- Ray's own plain-text 503 goes out in the router's format with `Retry-After`: `overloaded` when its queue for the
  router is full (`max_queued_requests`), `unavailable` when the router failed to deploy.

A client that went away gets nothing more. Only a body up to `REPLAY_LIMIT_BYTES` is kept for the resend (the
ingress refuses bigger ones itself).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.middleware import Middleware

from serve.errors import overloaded, unavailable

IMPORT_PATH = "serve.proxy_middleware.middlewares"
ATTEMPTS = 2
REPLAY_LIMIT_BYTES = 8 << 20

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("ray.serve")


def middlewares() -> list[Middleware]:
    """What `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` calls in the proxy process."""
    return [Middleware(ReplicaLossGuard)]


class RecordedBody:
    """The request's body messages as the proxy reads them, so a second attempt can read them again."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.messages: list[Message] = []
        self.size = 0
        self.replayable = True
        self.disconnected = False

    async def read(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        elif message["type"] == "http.request" and self.replayable:
            self.size += len(message.get("body", b""))
            self.replayable = self.size <= REPLAY_LIMIT_BYTES
            if self.replayable:
                self.messages.append(message)
            else:
                self.messages.clear()
        return message

    def replay(self) -> Receive:
        """A receive that gives the recorded messages again, then reads on from the client."""
        position = 0

        async def receive() -> Message:
            nonlocal position
            if position < len(self.messages):
                position += 1
                return self.messages[position - 1]
            message = await self.read()
            position = len(self.messages)
            return message

        return receive


class SentResponse:
    """What one attempt sent to the client: whether the response started, finished, and is an SSE stream. A plain-text
    503 of Ray's own is held back and sent in the router's error format instead."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = self.finished = self.sse = False
        self._refusal: dict[bytes, bytes] | None = None  # the headers of Ray's 503, while its body is read
        self._refusal_text = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = {k.lower(): v for k, v in message.get("headers", [])}
            content_type = headers.get(b"content-type", b"")
            if message["status"] == 503 and not content_type.startswith(b"application/json"):
                self._refusal = headers
                return
            self.started = True
            self.sse = content_type.startswith(b"text/event-stream")
        elif message["type"] == "http.response.body" and self._refusal is not None:
            self._refusal_text += message.get("body", b"")
            if not message.get("more_body", False):
                await self._send_refusal()
            return
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self._send(message)

    async def _send_refusal(self) -> None:
        """Ray's text says why (its queue is full: `overloaded`; the router failed to deploy: `unavailable`); the
        router's format says when to retry."""
        retry_after = self._refusal.get(b"retry-after", b"1")
        reason = self._refusal_text.decode(errors="replace").strip()[:300] or "no router replica can take it now"
        refusal = overloaded if "backpressure" in reason else unavailable
        response = refusal(f"Ray Serve refused the request ({reason})",
                           retry_after=float(retry_after) if retry_after.isdigit() else 1.0).response()
        self.started = True
        await self._send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        self.finished = True
        await self._send({"type": "http.response.body", "body": response.body, "more_body": False})


class ReplicaLossGuard:
    """Resend a request whose router replica died before answering; end a cut stream and refuse the OpenAI way."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = RecordedBody(receive)
        for attempt in range(1, ATTEMPTS + 1):
            response = SentResponse(send)
            try:
                await self.app(dict(scope), body.read if attempt == 1 else body.replay(), response.send)
            except Exception as error:  # noqa: BLE001 -- whatever the proxy raised, the client still gets an ending
                if response.finished:
                    raise
                log.warning("proxy: %s %s failed on attempt %d: %r", scope.get("method"), scope.get("path"), attempt, error)
            if response.finished or body.disconnected:
                return
            if response.started:
                if response.sse:
                    await self._end_stream(send)
                return
            if not body.replayable:
                break
            if attempt < ATTEMPTS:
                log.warning("proxy: %s %s got no response (its router replica died?); sending it again",
                            scope.get("method"), scope.get("path"))
        await unavailable("the router replica serving this request stopped; retry the request",
                          retry_after=1.0).response()(scope, receive, send)

    @staticmethod
    async def _end_stream(send: Send) -> None:
        error = unavailable("the router replica serving this stream stopped; retry the request", retry_after=1.0)
        events = f"data: {json.dumps(error.body())}\n\ndata: [DONE]\n\n".encode()
        await send({"type": "http.response.body", "body": events, "more_body": False})
