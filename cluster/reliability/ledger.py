"""The "nothing lost" ledger: every request sent is classified by how it ended, against the contract of
docs/reliability.md.

An accepted request must end as exactly one of: a complete answer (a finish reason; a stream then `[DONE]`), one
OpenAI-style JSON error (`Retry-After` on a 429/503), or, for a stream that already started, one in-band error event
then `[DONE]`. Anything else is a failure of ours: `lost` (no status line, a reset, or no end by the deadline plus a
grace), `truncated_stream` (a stream that ends without a finish reason or an error, or without `[DONE]`, or has data
after it), `server_error` (a 500, a body that is not an OpenAI error, an answer without a finish reason, or more answers
than asked for).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

KINDS = ("completed", "clean_error", "lost", "truncated_stream", "server_error")
FAILURES = ("lost", "truncated_stream", "server_error")
RETRYABLE = (429, 503)
GRACE_S = 20.0  # past the request's deadline, a request still open counts as lost (a hang)


@dataclass
class Entry:
    """How one request ended."""

    kind: str
    status: int | None
    stream: bool
    sent_at: float
    seconds: float
    model: str = ""
    detail: str = ""
    missing_retry_after: bool = False


@dataclass
class Ledger:
    """Every request of a run; `summary` counts them by kind and keeps a few examples of each failure."""

    entries: list[Entry] = field(default_factory=list)

    def add(self, entry: Entry) -> Entry:
        self.entries.append(entry)
        return entry

    def since(self, t0: float, t1: float | None = None) -> Ledger:
        """The requests sent in [t0, t1): one fault's window of a shared run."""
        return Ledger([e for e in self.entries if e.sent_at >= t0 and (t1 is None or e.sent_at < t1)])

    def failures(self) -> list[Entry]:
        return [e for e in self.entries if e.kind in FAILURES]

    def summary(self, examples: int = 3) -> dict[str, Any]:
        counts = Counter(e.kind for e in self.entries)
        failed = self.failures()
        return {"accepted": len(self.entries), "completed": counts["completed"], "clean_errors": counts["clean_error"],
                "lost": counts["lost"], "truncated_streams": counts["truncated_stream"],
                "server_errors": counts["server_error"],
                "missing_retry_after": sum(e.missing_retry_after for e in self.entries),
                "statuses": dict(sorted(Counter(str(e.status) for e in self.entries).items())),
                "failure_examples": [{"kind": e.kind, "status": e.status, "model": e.model, "stream": e.stream,
                                      "detail": e.detail[:300]} for e in failed[:examples]]}


async def send(client: httpx.AsyncClient, body: dict[str, Any], deadline_s: float, path: str = "/v1/chat/completions",
               headers: dict[str, str] | None = None, read_events: int | None = None) -> Entry:
    """Send one request with its deadline header and classify how it ended; `read_events` leaves a stream after that
    many events (a client that disconnects, whose entry is `completed` if what it read was well formed)."""
    stream, sent_at = bool(body.get("stream")), time.monotonic()
    headers = {"x-request-timeout": f"{deadline_s:g}", **(headers or {})}

    def entry(kind: str, status: int | None, detail: str = "", missing_retry_after: bool = False) -> Entry:
        return Entry(kind, status, stream, sent_at, time.monotonic() - sent_at, str(body.get("model", "")), detail,
                     missing_retry_after)

    try:
        async with asyncio.timeout(deadline_s + GRACE_S):
            async with client.stream("POST", path, json=body, headers=headers) as response:
                if response.headers.get("content-type", "").startswith("text/event-stream") and response.status_code == 200:
                    kind, detail = await _read_stream(response, read_events)
                    return entry(kind, 200, detail)
                raw = await response.aread()
                kind, detail = _classify_whole(response.status_code, raw)
                missing = response.status_code in RETRYABLE and not response.headers.get("retry-after", "").isdigit()
                return entry(kind, response.status_code, detail, missing)
    except TimeoutError:
        return entry("lost", None, f"no end within the deadline ({deadline_s:g} s) + {GRACE_S:g} s")
    except httpx.HTTPError as e:
        return entry("lost", None, f"{type(e).__name__}: {e}")


def openai_error(raw: bytes | str) -> dict[str, Any] | None:
    """The body's OpenAI-style `error` object (with a message and a type), or None if it is not one."""
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        return None
    return error if isinstance(error, dict) and error.get("message") and error.get("type") else None


def _classify_whole(status: int, raw: bytes) -> tuple[str, str]:
    """A whole (non-streamed) response."""
    if status >= 400:
        if (error := openai_error(raw)) is None:
            return "server_error", f"not an OpenAI error body: {raw[:200]!r}"
        return ("server_error" if status == 500 else "clean_error"), f"{error.get('code')}: {error['message'][:200]}"
    try:
        payload = json.loads(raw)
    except ValueError:
        return "server_error", f"not JSON: {raw[:200]!r}"
    if not isinstance(payload, dict):
        return "server_error", f"not a JSON object: {raw[:200]!r}"
    choices = payload.get("choices") or []
    if not choices or any(c.get("finish_reason") is None for c in choices):
        return "server_error", f"an answer without a finish reason: {raw[:200]!r}"
    return "completed", ""


async def _read_stream(response: httpx.Response, read_events: int | None) -> tuple[str, str]:
    """A stream: well formed when it ends with a finish reason or one error event, then `[DONE]`, then nothing."""
    finishes, errors, events, done, after_done = 0, 0, 0, False, False
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            after_done = after_done or done
            if data == "[DONE]":
                done = True
                continue
            events += 1
            chunk = json.loads(data)
            if "error" in chunk:
                errors += 1
            finishes += sum(c.get("finish_reason") is not None for c in chunk.get("choices") or [])
            if read_events is not None and events >= read_events:
                return ("completed" if errors == 0 else "clean_error"), f"left after {events} events"
    except (httpx.HTTPError, ValueError) as e:
        return "truncated_stream", f"broke after {events} events: {type(e).__name__}: {e}"
    if after_done or not done:
        return "truncated_stream", f"{events} events, [DONE] {'missing' if not done else 'followed by more data'}"
    if errors == 1 and finishes <= 1:
        return "clean_error", "an in-band error, then [DONE]"
    if errors == 0 and finishes == 1:
        return "completed", ""
    kind = "truncated_stream" if finishes == errors == 0 else "server_error"
    return kind, f"{finishes} finish reasons and {errors} errors before [DONE]"
