"""What one request did, gathered as it is served: the `Record` that becomes its metrics (serve/metrics.py) and its
decision-log line (serve/decision_log.py). It reads the decision trace the ingress already builds, so routing code
does not carry a second bookkeeping path.

A stream's record ends when its last packet is sent: `observe_stream` wraps the response body and measures time to
first token and the mean inter-token gap (per request; vLLM's own histograms have the per-token view).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

OUTCOMES = ("ok", "client_error", "rate_limited", "overloaded", "unavailable", "timeout", "error")
REASONS = ("score", "cost", "load_override", "fallback", "pinned", "ensemble", "keyword_fallback", "cache")
CAUSES = ("unavailable", "overloaded", "timeout", "context_overflow", "error")
REQUEST_ID_HEADER = "x-request-id"  # Serve's proxy keeps the client's, or makes one, and returns it on the response
MAX_REQUEST_ID = 200


def request_id(header: str | None) -> str:
    """The request's id as Serve's proxy set it (a new one when called without the proxy), bounded for the log."""
    return header[:MAX_REQUEST_ID] if header else uuid.uuid4().hex


def prompt_digest(body: dict[str, Any]) -> str:
    """A stable hash of what was asked (messages or prompt), so the log can group repeats without holding the text."""
    asked = body.get("messages", body.get("prompt"))
    return hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()[:16]


def outcome_of(status: int, code: str | None) -> str:
    if status < 400:
        return "ok"
    if status == 429:  # a tenant over its quota: the tenant's limit, not the service's, so not a server error
        return "rate_limited"
    if code == "overloaded":
        return "overloaded"
    if status == 503:
        return "unavailable"
    if status == 504:
        return "timeout"
    return "client_error" if status < 500 else "error"


def _cause(failure: dict) -> str:
    status, message = failure.get("status"), str(failure.get("error", ""))
    if status == 400:
        return "context_overflow"
    return {503: "overloaded" if message.startswith("Overloaded") else "unavailable", 504: "timeout"}.get(status, "error")


@dataclass
class Record:
    """One request, from arrival to its last byte; `trace` is the ingress's decision trace, attached when made."""

    request_id: str
    method: str
    model: str = ""
    stream: bool = False
    prompt_hash: str = ""
    prompt: Any = None  # only when the profile opts in to logging prompts
    tenant: str | None = None  # the API key's tenant, when keys are on
    started: float = field(default_factory=time.monotonic)
    at: float = field(default_factory=time.time)
    trace: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    error_code: str | None = None
    seconds: float = 0.0
    ttft_s: float | None = None
    itl_s: float | None = None
    usage: dict[str, int] = field(default_factory=dict)
    graded: Any = None  # (messages, routing text) when the quality monitor sampled this request; its answer is kept
    answer: str | None = None

    @property
    def outcome(self) -> str:
        return outcome_of(self.status, self.error_code)

    @property
    def answered_by(self) -> str | None:
        return self.trace.get("answered_by")

    @property
    def specialist(self) -> str | None:
        """Who the request's outcome belongs to: who answered, else the last specialist that failed it."""
        failed = self.trace.get("failed") or [{}]
        return self.answered_by or failed[-1].get("model")

    @property
    def first_choice(self) -> str | None:
        return self.trace.get("winner") or self.trace.get("model")

    @cached_property
    def reason(self) -> str | None:
        """Why the first choice was made, a bounded label (None: no decision, e.g. a bad request); cached: read after it ended."""
        t = self.trace
        if (t.get("cache") or {}).get("hit"):
            return "cache"
        if t.get("mode") == "pinned":
            return "pinned"
        if t.get("mode") == "ensemble":
            return "ensemble"
        if not t.get("specialists"):
            return None
        if t.get("failed"):
            return "fallback"
        if str(t.get("scorer", "")).startswith("keyword-fallback"):
            return "keyword_fallback"
        return _ranking_reason(t)

    @cached_property
    def fallbacks(self) -> list[tuple[str, str | None, str]]:
        """(from, to, cause) per failed candidate, `to` the next one tried (None: none answered); cached: read after it ended."""
        failed = self.trace.get("failed", [])
        tried = [f["model"] for f in failed] + ([self.answered_by] if self.answered_by else [])
        return [(f["model"], tried[i + 1] if i + 1 < len(tried) else None, _cause(f)) for i, f in enumerate(failed)]

    @property
    def decision_s(self) -> float | None:
        ms = self.trace.get("decision_ms")
        return None if ms is None else ms / 1000

    @property
    def margin(self) -> float | None:
        qualities = sorted((row["quality"] for row in self.trace.get("specialists", {}).values()), reverse=True)
        return round(qualities[0] - qualities[1], 4) if len(qualities) > 1 else None

    @property
    def expected_latency_s(self) -> dict[str, float]:
        """The latency the router expected of each specialist when it decided (the load it saw)."""
        return {name: row["expected_latency_s"] for name, row in self.trace.get("specialists", {}).items()}

    @property
    def ensemble(self) -> dict[str, Any]:
        return self.trace.get("ensemble") or {}

    @property
    def ensemble_mode(self) -> str | None:
        return self.ensemble.get("mode")

    @property
    def ensemble_stages(self) -> list[str]:
        return [stage["name"] for stage in self.ensemble.get("stages", [])]

    @property
    def early_stop(self) -> bool:
        return bool(self.ensemble.get("early_stop"))

    @property
    def cache_hit(self) -> bool | None:
        cache = self.trace.get("cache")
        return None if cache is None else bool(cache.get("hit"))

    @property
    def tokens(self) -> dict[str, tuple[int, int]]:
        """(prompt, completion) tokens per specialist: an ensemble's stage calls by model, the rest to who answered."""
        per_model: dict[str, list[int]] = {}
        for stage in self.ensemble.get("stages", []):
            for call in stage["calls"]:
                row = per_model.setdefault(call["model"], [0, 0])
                row[0] += call.get("prompt_tokens", 0)
                row[1] += call.get("completion_tokens", 0)
        if self.answered_by and self.usage:
            staged = [sum(r[i] for r in per_model.values()) for i in (0, 1)]
            row = per_model.setdefault(self.answered_by, [0, 0])
            row[0] += max(0, self.usage.get("prompt_tokens", 0) - staged[0])
            row[1] += max(0, self.usage.get("completion_tokens", 0) - staged[1])
        return {name: (p, c) for name, (p, c) in per_model.items()}

    def log_entry(self) -> dict[str, Any]:
        """The decision-log line: what a person needs to explain one request later, without the prompt text."""
        entry = {"request_id": self.request_id, "time": round(self.at, 3), "tenant": self.tenant, "method": self.method,
                 "model": self.model,
                 "stream": self.stream, "prompt_sha256_16": self.prompt_hash, "status": self.status,
                 "outcome": self.outcome, "error_code": self.error_code, "answered_by": self.answered_by,
                 "reason": self.reason, "seconds": round(self.seconds, 4),
                 "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 4),
                 "itl_s": None if self.itl_s is None else round(self.itl_s, 5),
                 "usage": self.usage, "fallbacks": [list(f) for f in self.fallbacks], "trace": self.trace}
        return entry if self.prompt is None else {**entry, "prompt": self.prompt}


def _ranking_reason(trace: dict[str, Any]) -> str:
    """score: the winner also has the best predicted quality; cost: it wins on cost; load_override: load changed it."""
    rows, weights, winner = trace["specialists"], trace.get("weights", {}), trace.get("winner")
    by_quality = max(rows, key=lambda n: rows[n]["quality"])
    if winner == by_quality or rows[winner]["quality"] == rows[by_quality]["quality"]:
        return "score"
    without_load = {n: weights.get("quality", 1) * r["quality"] - weights.get("cost", 0) * r["cost"] for n, r in rows.items()}
    return "cost" if max(without_load, key=without_load.get) == winner else "load_override"


def finish_json(record: Record, status: int, body: bytes) -> None:
    """A complete (non-streamed) response: its status, error code and usage."""
    record.status = status
    try:
        payload = json.loads(body) if body and body[:1] == b"{" else {}
    except ValueError:
        payload = {}
    record.error_code = (payload.get("error") or {}).get("code") if status >= 400 else None
    record.usage = payload.get("usage") or {}
    record.seconds = time.monotonic() - record.started
    if record.graded is not None and payload.get("choices"):
        choice = payload["choices"][0]
        record.answer = (choice.get("message") or {}).get("content") or choice.get("text")


async def observe_stream(packets: AsyncIterator[Any], record: Record, done: Callable[[Record], None]) -> AsyncIterator[Any]:
    """Relay a stream unchanged while timing its tokens; an in-band error or a client that left ends the record too."""
    first = last = None
    events = 0
    parts: list[str] = []
    try:
        async for packet in packets:
            text = packet if isinstance(packet, str) else packet.decode()
            for line in text.split("\n"):
                if not line.startswith("data: {"):
                    continue
                if line.startswith('data: {"error"'):
                    error = json.loads(line[len("data: "):])["error"]
                    record.status, record.error_code = 503 if error.get("type") == "server_error" else 400, error.get("code")
                elif '"usage"' in line and '"choices":[]' in line.replace(" ", ""):
                    record.usage = json.loads(line[len("data: "):]).get("usage") or {}
                else:
                    now = time.monotonic()
                    first, last, events = first or now, now, events + 1
                    if record.graded is not None:
                        parts.append(_delta_text(line))
            yield packet
    finally:
        record.seconds = time.monotonic() - record.started
        if first is not None:
            record.ttft_s = first - record.started
            record.itl_s = (last - first) / (events - 1) if events > 1 else None
        if parts:
            record.answer = "".join(parts)
        if not record.usage and events:
            record.usage = {"completion_tokens": max(0, events - 1)}  # one token per content chunk, less the role chunk
        done(record)


def _delta_text(line: str) -> str:
    """The text a chunk adds: a chat delta's content or a completion's text."""
    choices = json.loads(line[len("data: "):]).get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or choices[0].get("text") or ""
