"""The router ingress: OpenAI-compatible HTTP in front of the specialists, deciding who answers each request."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Any

from fastapi import FastAPI, Request
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.responses import JSONResponse, Response, StreamingResponse

from router.catalog import Profile
from router.routing import Router, Weights
from serve.dispatch import Upstream, call_specialist, is_context_overflow
from serve.errors import APIError, bad_request, model_not_found, unavailable
from serve.cluster_metrics import ServeMetricsPoller
from serve.load import LoadTracker
from serve.requests import ROUTER_FIELD, for_specialist, max_answer_tokens, read_body, routing_text, validate

log = logging.getLogger("ray.serve")

AUTO = "auto"
DEADLINE_HEADER = "x-request-timeout"
DECISION_HEADER = "x-route-decision"
HEALTH_TIMEOUT_S = 5.0

api = FastAPI(title="Specialist router", description="OpenAI-compatible API; `model: auto` routes to the best specialist.")


@api.exception_handler(APIError)
async def _api_error(_: Request, error: APIError) -> Response:
    return error.response()


@api.exception_handler(Exception)
async def _unexpected(_: Request, error: Exception) -> Response:
    """A bug of ours still answers in the OpenAI error format, and the replica keeps serving."""
    log.exception("unhandled error in the router: %s", error)
    return APIError(500, "Internal error in the router; it has been logged.", type="server_error", code="internal_error").response()


async def _sse(upstream: Upstream, stack: ExitStack) -> AsyncIterator[str]:
    """Relay the specialist's SSE packets as they come; end with [DONE]; release the load slot however it ends."""
    done = False
    try:
        async for packet in _chain(upstream):
            text = "".join(packet) if isinstance(packet, list) else packet
            done = done or text.rstrip().endswith("data: [DONE]")
            yield text
    except Exception as e:  # the specialist died mid-stream: tell the client in-band, the status line is gone
        log.warning("stream from upstream broke: %s", e)
        failure = unavailable("the model stopped while streaming; retry the request")
        yield f"data: {json.dumps(failure.body())}\n\n"
    finally:
        stack.close()
        if not done and upstream.rest is not None:
            upstream.rest.cancel()
    if not done:
        yield "data: [DONE]\n\n"


async def _chain(upstream: Upstream) -> AsyncIterator[Any]:
    yield upstream.first
    assert upstream.rest is not None
    async for packet in upstream.rest:
        yield packet


@serve.deployment
@serve.ingress(api)
class RouterIngress:
    """Validates, routes (`auto`) or pins, dispatches with fallback, and reports the decision in a header."""

    def __init__(self, profile: dict, specialists: dict[str, DeploymentHandle], checkpoint: str | None = None) -> None:
        self.profile = Profile.model_validate(profile)
        self.handles = specialists
        self.router = Router.from_profile(self.profile, checkpoint)
        url = self.profile.ingress.metrics_url
        self.serve_metrics = ServeMetricsPoller(url, self.profile.names) if url else None
        self.load = LoadTracker(self.profile, self.serve_metrics)

    def _poll_serve_metrics(self) -> None:
        """Start the once-a-second poll of Serve's metrics on the replica's event loop (idempotent)."""
        if self.serve_metrics is not None:
            self.serve_metrics.start()

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Response:
        return await self._serve(request, "chat")

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._serve(request, "completions")

    @api.get("/v1/models")
    async def models(self) -> dict:
        created = int(time.time())
        cards = [{"id": AUTO, "object": "model", "created": created, "owned_by": "router", "description": "routed by the scorer",
                  "scorer": self.router.scorer_status}]
        for spec in self.profile.specialists:
            cards.append(
                {
                    "id": spec.name,
                    "object": "model",
                    "created": created,
                    "owned_by": "specialists",
                    "roles": spec.roles,
                    "description": spec.description,
                    "context_window": spec.context_window,
                    "cost": spec.cost.model_dump(),
                }
            )
        return {"object": "list", "data": cards}

    @api.get("/healthz")
    async def healthz(self) -> Response:
        """Ready (200) only when every specialist answers its health check, otherwise 503 with who is not; `degraded`
        (still 200: it serves) when the scorer fell back to keywords, with the reason under `scorer`."""
        self._poll_serve_metrics()
        states = dict(zip(self.handles, await asyncio.gather(*(self._health(n) for n in self.handles))))
        ready = all(state == "ready" for state in states.values())
        scorer = self.router.scorer_status
        status = "starting" if not ready else "degraded" if scorer["fallback"] else "ready"
        return JSONResponse({"status": status, "specialists": states, "scorer": scorer}, status_code=200 if ready else 503)

    async def _health(self, name: str) -> str:
        try:
            await asyncio.wait_for(self.handles[name].check_health.remote(), HEALTH_TIMEOUT_S)
            return "ready"
        except asyncio.TimeoutError:
            return "not ready (no healthy replica answered)"
        except Exception as e:  # an unhealthy engine raises; report it instead of failing the probe
            return f"unhealthy: {type(e).__name__}"

    async def _serve(self, request: Request, method: str) -> Response:
        self._poll_serve_metrics()
        body = await read_body(request)
        parsed = validate(method, body)
        deadline = self._deadline(request)
        candidates, trace = await self._candidates(method, body, max_answer_tokens(parsed))
        error: APIError | None = None
        for name in candidates:
            spec = self.profile.specialist(name)
            stack = ExitStack()
            stack.enter_context(self.load.track(name))
            sent = time.monotonic()
            try:
                upstream = await call_specialist(
                    self.handles[name], method, for_specialist(method, body, spec), model=name, deadline_s=deadline
                )
                self.load.first_token(name, time.monotonic() - sent)
            except APIError as e:
                stack.close()
                trace.setdefault("failed", []).append({"model": name, "status": e.status, "error": e.message})
                error = e
                if e.code == "unavailable":
                    self.load.mark_failed(name)
                if trace["mode"] == AUTO and (e.status in (502, 503) or is_context_overflow(e)):
                    continue
                break
            trace["answered_by"] = name
            headers = {DECISION_HEADER: json.dumps(trace, separators=(",", ":")), "x-routed-model": name}
            log.info("route %s", headers[DECISION_HEADER])
            return self._respond(upstream, stack, headers)
        assert error is not None
        raise error if not is_context_overflow(error) else self._overflow(candidates, error)

    def _overflow(self, candidates: list[str], error: APIError) -> APIError:
        """No candidate's window fits the prompt: say the largest limit on offer."""
        largest = max(self.profile.specialist(n).context_window for n in candidates)
        return bad_request(f"{error.message} (the largest context window available is {largest} tokens)", code="context_length_exceeded")

    async def _candidates(self, method: str, body: dict[str, Any], max_tokens: int | None) -> tuple[list[str], dict[str, Any]]:
        """Pinned: just that specialist. `auto`: the router's ranking, best first, with its trace."""
        model = body["model"]
        if model != AUTO:
            if model not in self.handles:
                raise model_not_found(model, [AUTO, *self.handles])
            return [model], {"mode": "pinned", "model": model}
        try:
            weights = Weights.from_request(body.get(ROUTER_FIELD), self.profile.router)
        except ValueError as e:
            raise bad_request(str(e), param=ROUTER_FIELD) from None
        decision = await self.router.adecide(routing_text(method, body), weights, self.load.snapshot(max_tokens))
        down = [name for name in decision.ranked if self.load.is_down(name)]
        ranked = sorted(decision.ranked, key=down.__contains__)  # recently failed specialists go last, not away
        return ranked, {"mode": AUTO, **decision.trace, **({"down": down} if down else {})}

    def _deadline(self, request: Request) -> float:
        """The client's deadline (`X-Request-Timeout` seconds), capped by the profile's request timeout."""
        limit = self.profile.ingress.request_timeout_s
        raw = request.headers.get(DEADLINE_HEADER)
        if raw is None:
            return limit
        try:
            asked = float(raw)
        except ValueError:
            raise bad_request(f"{DEADLINE_HEADER} must be a number of seconds, got {raw!r}") from None
        if asked <= 0:
            raise bad_request(f"{DEADLINE_HEADER} must be positive, got {raw!r}")
        return min(asked, limit)

    def _respond(self, upstream: Upstream, stack: ExitStack, headers: dict[str, str]) -> Response:
        if not upstream.is_stream:
            stack.close()
            return JSONResponse(upstream.first.model_dump(mode="json", exclude_none=True), headers=headers)
        return StreamingResponse(_sse(upstream, stack), media_type="text/event-stream", headers=headers)
