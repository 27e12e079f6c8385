"""The router ingress: OpenAI-compatible HTTP in front of the specialists, deciding who answers each request."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.responses import JSONResponse, Response, StreamingResponse

from router.catalog import Profile
from router.ensemble import modes as ensembles
from router.ensemble import spec as ensemble_spec
from router.ensemble.calls import Call, Reply
from router.routing import Decision, Router, Weights
from serve.auth import Gate
from serve.backpressure import ReplicaBound
from serve.cache import ResponseCache, cache_key
from serve.cluster_metrics import ServeMetricsPoller
from serve.dispatch import Upstream, call_specialist, is_context_overflow
from serve.ensemble import add_usage, add_usage_to_sse, call_body, completion, completion_events, final_body, reply_of
from serve.errors import APIError, bad_request, internal_error, model_not_found, unavailable, upstream_timeout
from serve.jsonl_log import JsonlLog
from serve.load import LoadTracker
from serve.metrics import RouterMetrics
from serve.observe import REQUEST_ID_HEADER, Record, finish_json, observe_stream, prompt_digest, request_id
from serve.openapi import OPENAPI_PATH, describe_bodies, request_body
from serve.quality import QualityMonitor
from serve.quotas import Admission
from serve.requests import (ENSEMBLE_FIELD, ROUTER_FIELD, RouterHints, check_headers, check_limits,
                            for_specialist, max_answer_tokens, read_body, router_hints, routing_text, validate)

log = logging.getLogger("ray.serve")

AUTO = "auto"
DEADLINE_HEADER = "x-request-timeout"
DECISION_HEADER = "x-route-decision"
HEALTH_TIMEOUT_S = 5.0
FLUSH_S = 1.0  # metrics to Ray and log lines to disk, this often
HEARTBEAT_S = 10.0  # an SSE comment at least this often while an ensemble's early stages run, so proxies keep the stream

api = FastAPI(title="Specialist router", description="OpenAI-compatible API; `model: auto` routes to the best specialist.",
              docs_url=None, redoc_url=None, openapi_url=None)  # served below, behind the admin key when auth is on
describe_bodies(api)


@api.exception_handler(APIError)
async def _api_error(_: Request, error: APIError) -> Response:
    return error.response()


@api.exception_handler(Exception)
async def _unexpected(_: Request, error: Exception) -> Response:
    """A bug of ours still answers in the OpenAI error format, and the replica keeps serving."""
    log.exception("unhandled error in the router: %s", error)
    return internal_error().response()


def _event(error: APIError) -> str:
    """An error inside a stream that has started: the status line is gone, so it goes in-band."""
    return f"data: {json.dumps(error.body())}\n\n"


async def _sse(upstream: Upstream, stack: ExitStack, model: str, deadline_s: float, give_up_at: float,
               extra_usage: dict[str, int] | None = None) -> AsyncIterator[str]:
    """Relay the specialist's SSE packets as they come (adding earlier calls' usage) until the request's deadline;
    end with [DONE]; release the load slot however it ends."""
    done = False
    try:
        async for packet in _chain(upstream, give_up_at):
            text = "".join(packet) if isinstance(packet, list) else packet
            done = done or text.rstrip().endswith("data: [DONE]")
            yield add_usage_to_sse(text, extra_usage) if extra_usage else text
    except TimeoutError:  # a stalled engine must not hold the stream past the deadline the client was promised
        log.warning("stream from %s passed the request's deadline", model)
        yield _event(upstream_timeout(model, deadline_s))
    except Exception as e:  # the specialist died mid-stream: tell the client in-band, the status line is gone
        log.warning("stream from upstream broke: %s", e)
        yield _event(unavailable("the model stopped while streaming; retry the request"))
    finally:
        stack.close()
        if not done and upstream.rest is not None:
            upstream.rest.cancel()
    if not done:
        yield "data: [DONE]\n\n"


async def _chain(upstream: Upstream, give_up_at: float) -> AsyncIterator[Any]:
    """The first packet, then the rest, each waited for only until `give_up_at` (TimeoutError past it)."""
    yield upstream.first
    assert upstream.rest is not None
    while True:
        try:
            async with asyncio.timeout(give_up_at - time.monotonic()):  # around the await only, never the yield
                packet = await anext(upstream.rest)
        except StopAsyncIteration:
            return
        yield packet


# Module helpers stand above the deployment class: @serve.deployment serialises the class as it is defined,
# with the module globals its methods use, so anything defined below it would be missing in the replica.
def _remaining(give_up_at: float) -> float:
    """What is left of a request's deadline for its next call (a call always gets a moment to fail cleanly)."""
    return max(0.05, give_up_at - time.monotonic())


async def _iterate(events) -> AsyncIterator[str]:
    for event in events:
        yield event


def _include_usage(body: dict[str, Any]) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


def _budget_error(error: ensembles.BudgetExhausted) -> APIError:
    return bad_request(str(error), param=f"{ROUTER_FIELD}.{ENSEMBLE_FIELD}.token_budget")


def _trace_comment(trace: dict[str, Any]) -> str:
    """A streamed ensemble's decision trace, known only once its early stages ran: sent as an SSE comment."""
    return f": trace {json.dumps(trace, separators=(',', ':'))}\n\n"

@serve.deployment
@serve.ingress(api)
class RouterIngress:
    """Validates, routes (`auto`) or pins, dispatches with fallback, and reports the decision in a header."""

    def __init__(self, profile: dict, specialists: dict[str, DeploymentHandle], checkpoint: str | None = None,
                 observe_dir: str | None = None) -> None:
        self.profile = Profile.model_validate(profile)
        self.handles = specialists
        self.router = Router.from_profile(self.profile, checkpoint)
        entries = self.profile.ensemble.cache_entries
        self.cache = ResponseCache(entries) if entries else None
        url = self.profile.ingress.metrics_url
        self.serve_metrics = ServeMetricsPoller(url, self.profile.names) if url else None
        self.load = LoadTracker(self.profile, self.serve_metrics)
        metrics = self.profile.observability.metrics
        self.metrics = RouterMetrics(self.profile, version("specialist-router"), self.router.scorer_name) if metrics else None
        self.decisions, self.quality = self._observers(Path(observe_dir) if observe_dir else None)
        self.gate = Gate.from_profile(self.profile)
        self.serving = ReplicaBound(self.profile.ingress.max_ongoing_requests, self.profile.ingress.drain_s)
        self._flushing: asyncio.Task | None = None

    def _observers(self, folder: Path | None) -> tuple[JsonlLog | None, QualityMonitor | None]:
        """The decision log and the quality monitor (with its judged dataset), as the profile asks for them."""
        config = self.profile.observability
        replica = serve.get_replica_context().replica_id.unique_id
        decisions = JsonlLog(folder / "decisions", "decisions", replica, config) if folder and config.decision_log else None
        if config.judge is None or config.judge_sample_rate == 0:
            return decisions, None
        dataset = JsonlLog(folder / "judged", "judged", replica, config) if folder else None
        return decisions, QualityMonitor(config, self._grading_call, self._judged, dataset)

    async def _grading_call(self, call: Call) -> Reply:
        """A quality-monitor call: the dispatch path of every call, with the profile's request timeout."""
        return await self._caller(time.monotonic() + self.profile.ingress.request_timeout_s)(call)

    def _poll_serve_metrics(self) -> None:
        """Start the once-a-second poll of Serve's metrics on the replica's event loop (idempotent)."""
        if self.serve_metrics is not None:
            self.serve_metrics.start()

    @api.post("/v1/chat/completions", openapi_extra=request_body("chat"))
    async def chat(self, request: Request) -> Response:
        return await self._observed(request, "chat")

    @api.post("/v1/completions", openapi_extra=request_body("completions"))
    async def completions(self, request: Request) -> Response:
        return await self._observed(request, "completions")

    @api.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi(self, request: Request) -> Response:
        """The API's description: open with auth off, otherwise for admin keys only, as are the pages below."""
        self.gate.identify(request.headers.get("authorization"), admin=True)
        return JSONResponse(api.openapi())

    @api.get("/docs", include_in_schema=False)
    @api.get("/redoc", include_in_schema=False)
    async def docs(self, request: Request) -> Response:
        """Swagger UI or ReDoc; with auth on, the browser must send the admin key with the page's own /openapi.json fetch."""
        self.gate.identify(request.headers.get("authorization"), admin=True)
        page = get_redoc_html if request.url.path.endswith("/redoc") else get_swagger_ui_html
        return page(openapi_url=request.scope.get("root_path", "") + OPENAPI_PATH, title=api.title)

    @api.get("/v1/router/decisions/{request_id}")
    async def decision(self, request_id: str, request: Request) -> Response:
        """One request's decision-log line, by the id its response carried in X-Request-Id."""
        self.gate.identify(request.headers.get("authorization"), admin=True)
        entry = await asyncio.to_thread(self.decisions.find, request_id) if self.decisions else None
        if entry is None:
            why = ("is not in the decision log (it may have rotated out)" if self.decisions
                   else "cannot be found: the decision log is off")
            return APIError(404, f"Request {request_id!r} {why}.", code="decision_not_found").response()
        return JSONResponse(entry)

    @api.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self.gate.identify(request.headers.get("authorization"))
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
                    "quality_from": self.router.quality_from[spec.name],
                }
            )
        for mode in self.profile.ensemble.modes:
            cards.append({"id": ensemble_spec.virtual_model(mode), "object": "model", "created": created, "owned_by": "router",
                          "description": f"a routed ensemble ({mode}) of the specialists"})
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

    async def _observed(self, request: Request, method: str) -> Response:
        """Serve one request and record it (metrics, decision log) once its last byte is sent, whatever the outcome."""
        record = Record(request_id(request.headers.get(REQUEST_ID_HEADER)), method)
        admission: Admission | None = None
        try:
            self.serving.enter(id(record))
            admission = await self.gate.admit(request.headers.get("authorization"))
            record.tenant = admission.tenant if admission else None
            response = await self._serve(request, method, record)
        except APIError as e:
            response = e.response()
        except Exception as e:  # a bug of ours: answered as the handler above would, but still recorded
            log.exception("unhandled error in the router: %s", e)
            response = internal_error().response()
        response.headers.update(admission.headers if admission else {})
        if isinstance(response, StreamingResponse):
            response.body_iterator = observe_stream(response.body_iterator, record, lambda r: self._finish(r, admission))
        else:
            finish_json(record, response.status_code, response.body)
            self._finish(record, admission)
        return response

    def _start_flushing(self) -> None:
        """Hand metrics to Ray and log lines to disk once a second, off the requests' path (idempotent)."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_every_second())

    async def _flush_every_second(self) -> None:
        buffered = [b for b in (self.metrics, self.decisions, self.quality and self.quality.dataset) if b is not None]
        while True:
            await asyncio.sleep(FLUSH_S)
            if self.metrics is not None:
                self.metrics.quota_store_failed(self.gate.store_failures)
            for buffer in buffered:
                buffer.flush()

    def _judged(self, specialist: str, score: float) -> None:
        if self.metrics is not None:
            self.metrics.judged(specialist, score)

    def _finish(self, record: Record, admission: Admission | None = None) -> None:
        """Metrics, the request's line in the decision log (or, with that log off, its trace in the replica log), and
        its quotas settled (tokens charged, concurrency slot freed)."""
        self.serving.leave(id(record))
        self.gate.settle(admission, record.usage)
        if self.metrics is not None:
            self.metrics.record(record)
            self.metrics.set_inflight(self.load.in_flight())
        if self.decisions is not None:
            self.decisions.write(record.log_entry())
        elif record.trace:
            log.info("route %s", json.dumps(record.trace, separators=(",", ":")))
        if self.quality is not None and record.answer and record.answered_by and record.outcome == "ok":
            self.quality.submit(record.request_id, record.answered_by, *record.graded, record.answer)

    async def _serve(self, request: Request, method: str, record: Record) -> Response:
        self._poll_serve_metrics()
        self._start_flushing()
        check_headers(request.headers)
        body = await read_body(request, self.profile.ingress.max_body_bytes, self.profile.ingress.body_timeout_s)
        parsed = validate(method, body)
        check_limits(method, parsed, self.profile.ingress.limits)
        record.model, record.stream, record.prompt_hash = body["model"], bool(body.get("stream")), prompt_digest(body)
        record.prompt = body.get("messages", body.get("prompt")) if self.profile.observability.log_prompts else None
        if self.quality is not None and self.quality.wants(record.request_id):
            text = routing_text(method, body)
            record.graded = (body["messages"] if method == "chat" else [{"role": "user", "content": text}], text)
        deadline = self._deadline(request)
        give_up_at = time.monotonic() + deadline
        hints = router_hints(body)
        spec = self._ensemble_spec(method, body, hints)
        key = cache_key(body) if self.cache is not None and hints.cache and method == "chat" else None
        if key is not None and (hit := self.cache.get(key)) is not None:
            reply, trace = hit
            record.trace = {**trace, "cache": {"hit": True, "hits": self.cache.hits}}
            return self._answered(body, reply, record.trace, {})
        if spec is not None:
            return await self._ensemble(body, parsed, spec, hints, deadline, give_up_at, key, record)
        candidates, record.trace = await self._candidates(method, body, hints, max_answer_tokens(parsed))
        trace = record.trace
        if key is not None:
            trace["cache"] = {"hit": False}
        name, upstream, stack = await self._first_answer(method, candidates, lambda _: body, trace, _remaining(give_up_at))
        if key is not None and not upstream.is_stream:
            self.cache.put(key, reply_of(name, upstream.first, 0.0), trace)
        return self._respond(upstream, stack, name, deadline, give_up_at, self._headers(trace))

    async def _start(self, name: str, method: str, payload: Any, deadline_s: float, stack: ExitStack) -> Upstream:
        """One call through the dispatch path, holding the specialist's load slot on `stack`; a dead engine marks it
        down for the `auto` ranking."""
        stack.enter_context(self.load.track(name))
        sent = time.monotonic()
        try:
            upstream = await call_specialist(self.handles[name], method, payload, model=name, deadline_s=deadline_s)
        except APIError as e:
            stack.close()
            if e.code == "unavailable":
                self.load.mark_failed(name)
            raise
        self.load.first_token(name, time.monotonic() - sent)
        return upstream

    async def _first_answer(self, method: str, candidates: list[str], body_for: Any, trace: dict[str, Any],
                            deadline: float) -> tuple[str, Upstream, ExitStack]:
        """Try the candidates in order (`auto` and ensembles fall back on 502/503 and on a window too small)."""
        error: APIError | None = None
        for name in candidates:
            stack = ExitStack()
            try:
                upstream = await self._start(name, method, for_specialist(method, body_for(name), self.profile.specialist(name)),
                                             deadline, stack)
            except APIError as e:
                trace.setdefault("failed", []).append({"model": name, "status": e.status, "error": e.message})
                error = e
                if trace["mode"] != "pinned" and (e.status in (502, 503) or is_context_overflow(e)):
                    continue
                break
            trace["answered_by"] = name
            return name, upstream, stack
        assert error is not None
        raise error if not is_context_overflow(error) else self._overflow(candidates, error)

    @staticmethod
    def _headers(trace: dict[str, Any]) -> dict[str, str]:
        return {DECISION_HEADER: json.dumps(trace, separators=(",", ":")), "x-routed-model": trace.get("answered_by", "")}

    def _overflow(self, candidates: list[str], error: APIError) -> APIError:
        """No candidate's window fits the prompt: say the largest limit on offer."""
        largest = max(self.profile.specialist(n).context_window for n in candidates)
        return bad_request(f"{error.message} (the largest context window available is {largest} tokens)", code="context_length_exceeded")

    async def _decide(self, method: str, body: dict[str, Any], hints: RouterHints, snapshot: dict) -> tuple[Decision, list[str]]:
        """The router's decision for `auto`, and its ranking with recently failed specialists moved last."""
        try:
            weights = Weights.from_request(hints.weights, self.profile.router)
        except ValueError as e:
            raise bad_request(str(e), param=ROUTER_FIELD) from None
        began = time.perf_counter()
        decision = await self.router.adecide(routing_text(method, body), weights, snapshot)
        decision.trace["decision_ms"] = round((time.perf_counter() - began) * 1000, 3)
        down = [name for name in decision.ranked if self.load.is_down(name)]
        decision.trace.update({"down": down} if down else {})
        return decision, sorted(decision.ranked, key=down.__contains__)  # recently failed go last, not away

    async def _candidates(self, method: str, body: dict[str, Any], hints: RouterHints,
                          max_tokens: int | None) -> tuple[list[str], dict[str, Any]]:
        """Pinned: just that specialist. `auto`: the router's ranking, best first, with its trace."""
        model = body["model"]
        if model != AUTO:
            if model not in self.handles:
                raise model_not_found(model, self._model_ids())
            return [model], {"mode": "pinned", "model": model}
        decision, ranked = await self._decide(method, body, hints, self.load.snapshot(max_tokens))
        return ranked, {"mode": AUTO, **decision.trace}

    def _model_ids(self) -> list[str]:
        return [AUTO, *self.handles, *(ensemble_spec.virtual_model(m) for m in self.profile.ensemble.modes)]

    # --- ensembles ------------------------------------------------------------------------------------------------

    def _ensemble_spec(self, method: str, body: dict[str, Any], hints: RouterHints) -> ensemble_spec.EnsembleSpec | None:
        """The ensemble a request asks for (None: a single answer); every way to ask for a bad one is a 400."""
        model_mode = ensemble_spec.mode_of_model(body["model"])
        if hints.ensemble is None and model_mode is None:
            return None
        param = f"{ROUTER_FIELD}.{ENSEMBLE_FIELD}"
        if model_mode is not None and model_mode not in self.profile.ensemble.modes:
            raise model_not_found(body["model"], self._model_ids())
        if model_mode is None and body["model"] != AUTO:
            raise bad_request(f"an ensemble picks its own specialists: send model 'auto' or an ensemble-<mode> model, "
                              f"not {body['model']!r}", param="model")
        if method != "chat":
            raise bad_request("ensembles answer chat requests (POST /v1/chat/completions)", param=param)
        if body.get("n", 1) != 1:
            raise bad_request("an ensemble writes one answer: n must be 1", param="n")
        try:
            return ensemble_spec.parse(hints.ensemble, model_mode, self.profile.ensemble, len(self.profile.specialists))
        except ValueError as e:
            raise bad_request(str(e), param=param) from None

    async def _ensemble(self, body: dict[str, Any], parsed: Any, spec: ensemble_spec.EnsembleSpec, hints: RouterHints,
                        deadline: float, give_up_at: float, key: str | None, record: Record) -> Response:
        snapshot = self.load.snapshot(max_answer_tokens(parsed))
        decision, ranked = await self._decide("chat", body, hints, snapshot)
        trace: dict[str, Any] = {"mode": "ensemble", **decision.trace, **({"cache": {"hit": False}} if key else {})}
        record.trace = trace
        if reason := ensembles.degrade_reason({n: snapshot[n] for n in ranked[: spec.proposers]},
                                              self.profile.ensemble.degrade_utilisation):
            trace.update(mode=AUTO, ensemble={"mode": spec.mode, "degraded": reason})
            name, upstream, stack = await self._first_answer("chat", ranked, lambda _: body, trace, _remaining(give_up_at))
            return self._respond(upstream, stack, name, deadline, give_up_at, self._headers(trace))
        plan = self._plan(spec, body, parsed, decision, ranked, deadline)
        try:
            ensembles.check_budget(plan)
        except ensembles.BudgetExhausted as e:
            raise _budget_error(e) from None
        if body.get("stream"):
            headers = {DECISION_HEADER: json.dumps({**trace, "ensemble": {"mode": spec.mode, "trace": "in the stream"}})}
            return StreamingResponse(self._ensemble_events(plan, body, ranked, trace, give_up_at), media_type="text/event-stream",
                                     headers=headers)
        try:
            outcome = await ensembles.run(plan, self._caller(give_up_at))
        except ensembles.BudgetExhausted as e:
            raise _budget_error(e) from None
        trace["ensemble"] = outcome.trace
        if outcome.answer is not None:
            if key is not None:
                self.cache.put(key, outcome.answer, trace)
            trace["answered_by"] = outcome.answer.model
            return self._answered(body, outcome.answer, trace, outcome.trace["usage"])
        final = outcome.final
        name, upstream, stack = await self._first_answer("chat", self._final_candidates(final, ranked),
                                                         lambda n: final_body(body, replace(final, model=n)), trace,
                                                         _remaining(give_up_at))
        stack.close()
        response = upstream.first.model_dump(mode="json", exclude_none=True)
        add_usage(response, outcome.trace["usage"])
        outcome.trace.update(calls=outcome.trace["calls"] + 1, usage=response.get("usage", {}))
        if key is not None:
            self.cache.put(key, reply_of(name, upstream.first, 0.0), trace)
        return JSONResponse(response, headers=self._headers(trace))

    def _plan(self, spec: ensemble_spec.EnsembleSpec, body: dict[str, Any], parsed: Any, decision: Decision,
              ranked: list[str], deadline: float) -> ensembles.Plan:
        config = self.profile.ensemble
        quality = {name: row["quality"] for name, row in decision.trace["specialists"].items()}
        window = max(self.profile.specialist(n).context_window for n in ranked)
        return ensembles.Plan(
            spec=spec, messages=body["messages"], ranked=ranked, quality=quality,
            aggregator=config.aggregator or ranked[0], final_max_tokens=max_answer_tokens(parsed) or window,
            temperature=body.get("temperature") or 0.0,  # an ensemble's calls are deterministic unless asked otherwise
            sample_temperature=config.sample_temperature,
            weights=(config.scorer_weight, config.self_weight, config.cross_weight), deadline_s=deadline)

    @staticmethod
    def _final_candidates(final: Call, ranked: list[str]) -> list[str]:
        """The final call's specialist first, then the ranking: a dead aggregator falls back as `auto` would."""
        return [final.model, *(name for name in ranked if name != final.model)]

    def _caller(self, give_up_at: float):
        """Every ensemble call goes through the dispatch path of single requests (load, deadline, retry)."""
        async def call(c: Call) -> Reply:
            with ExitStack() as stack:
                sent = time.monotonic()
                payload = for_specialist("chat", call_body(c), self.profile.specialist(c.model))
                upstream = await self._start(c.model, "chat", payload, _remaining(give_up_at), stack)
                return reply_of(c.model, upstream.first, time.monotonic() - sent)
        return call

    def _answered(self, body: dict[str, Any], reply: Reply, trace: dict[str, Any], usage: dict[str, int]) -> Response:
        """An answer already written (an ensemble's pick, a cached answer) as the response the client asked for."""
        trace["answered_by"] = reply.model
        headers = self._headers(trace)
        if body.get("stream"):
            return StreamingResponse(_iterate(completion_events(reply, usage, _include_usage(body))), media_type="text/event-stream",
                                     headers=headers)
        return JSONResponse(completion(reply, usage), headers=headers)

    async def _ensemble_events(self, plan: ensembles.Plan, body: dict[str, Any], ranked: list[str], trace: dict[str, Any],
                               give_up_at: float) -> AsyncIterator[str]:
        """A streamed ensemble: progress as SSE comments while the early stages run, then the final stage's tokens."""
        progress: asyncio.Queue[str] = asyncio.Queue()
        task = asyncio.ensure_future(ensembles.run(plan, self._caller(give_up_at), progress.put_nowait))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=HEARTBEAT_S) if progress.empty() else None
                while not progress.empty():
                    yield f": {progress.get_nowait()}\n\n"
                if not task.done() and progress.empty():
                    yield ": working\n\n"
            outcome = task.result()
        except ensembles.BudgetExhausted as e:
            yield _event(_budget_error(e))
            yield "data: [DONE]\n\n"
            return
        except Exception as e:  # noqa: BLE001 -- a bug must still end the stream in the OpenAI way
            log.exception("ensemble failed: %s", e)
            yield _event(unavailable("the ensemble failed; retry the request"))
            yield "data: [DONE]\n\n"
            return
        finally:
            task.cancel()  # a client that went away stops the ensemble's calls
        trace["ensemble"] = outcome.trace
        if outcome.answer is not None:
            trace["answered_by"] = outcome.answer.model
            yield _trace_comment(trace)
            for event in completion_events(outcome.answer, outcome.trace["usage"], _include_usage(body)):
                yield event
            return
        final = outcome.final
        try:
            name, upstream, stack = await self._first_answer(
                "chat", self._final_candidates(final, ranked), lambda n: final_body(body, replace(final, model=n)), trace,
                _remaining(give_up_at))
        except APIError as e:
            yield _event(e)
            yield "data: [DONE]\n\n"
            return
        outcome.trace["calls"] += 1
        yield _trace_comment(trace)
        async for packet in _sse(upstream, stack, name, plan.deadline_s, give_up_at, outcome.trace["usage"]):
            yield packet

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
        if not asked > 0:  # NaN too
            raise bad_request(f"{DEADLINE_HEADER} must be a positive number of seconds, got {raw!r}")
        return min(asked, limit)

    def _respond(self, upstream: Upstream, stack: ExitStack, model: str, deadline_s: float, give_up_at: float,
                 headers: dict[str, str]) -> Response:
        """The specialist's answer as the client asked for it, a stream within the request's deadline; the load slot
        is released when it is sent."""
        if not upstream.is_stream:
            stack.close()
            return JSONResponse(upstream.first.model_dump(mode="json", exclude_none=True), headers=headers)
        return StreamingResponse(_sse(upstream, stack, model, deadline_s, give_up_at), media_type="text/event-stream",
                                 headers=headers)

