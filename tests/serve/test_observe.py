"""What one request's record says (the metrics' labels and the decision log come from it), and the decision log."""

import asyncio
import json

import pytest

from router.catalog import Observability, load_profile
from serve.jsonl_log import JsonlLog
from router.ensemble.calls import Reply
from serve.metrics import RouterMetrics
from serve.observe import CAUSES, OUTCOMES, REASONS, Record, finish_json, observe_stream, outcome_of, request_id
from serve.quality import QualityMonitor, sampled


def _auto_trace(winner="coder", qualities=None, costs=None, latency=None, **extra):
    qualities = qualities or {"coder": 0.8, "general": 0.5}
    rows = {n: {"quality": q, "cost": (costs or {}).get(n, 0.0), "expected_latency_s": (latency or {}).get(n, 1.0),
                "load": {"in_flight": 0}, "utility": 0.0} for n, q in qualities.items()}
    return {"mode": "auto", "scorer": "scorer-v1", "weights": {"quality": 1.0, "cost": 0.2, "latency": 0.1},
            "specialists": rows, "winner": winner, "answered_by": winner, "decision_ms": 2.5, **extra}


@pytest.mark.parametrize(("trace", "reason"), [
    (_auto_trace(), "score"),
    (_auto_trace(winner="general", costs={"coder": 2.0, "general": 0.0}), "cost"),
    (_auto_trace(winner="general", latency={"coder": 60.0}), "load_override"),
    (_auto_trace(scorer="keyword-fallback (missing)"), "keyword_fallback"),
    (_auto_trace(failed=[{"model": "coder", "status": 503, "error": "Unavailable: x"}], answered_by="general"), "fallback"),
    ({"mode": "pinned", "model": "coder", "answered_by": "coder"}, "pinned"),
    ({**_auto_trace(), "mode": "ensemble"}, "ensemble"),
    ({**_auto_trace(), "cache": {"hit": True, "hits": 3}}, "cache"),
    ({}, None),
])
def test_reason_is_one_bounded_label(trace, reason):
    record = Record("r1", "chat", trace=trace)
    assert record.reason == reason
    assert reason is None or reason in REASONS


def test_fallback_chain_names_each_hop_and_its_cause():
    trace = _auto_trace(answered_by="c", qualities={"a": 0.9, "b": 0.8, "c": 0.1}, winner="a",
                        failed=[{"model": "a", "status": 503, "error": "Overloaded: queue full"},
                                {"model": "b", "status": 504, "error": "did not answer"}])
    assert Record("r", "chat", trace=trace).fallbacks == [("a", "b", "overloaded"), ("b", "c", "timeout")]
    nobody = {**trace, "answered_by": None, "failed": [{"model": "a", "status": 503, "error": "Unavailable: dead"}]}
    assert Record("r", "chat", trace=nobody).fallbacks == [("a", None, "unavailable")]
    assert {cause for *_, cause in Record("r", "chat", trace=trace).fallbacks} <= set(CAUSES)


def test_margin_decision_time_and_expected_latency_come_from_the_trace():
    record = Record("r", "chat", trace=_auto_trace(qualities={"a": 0.7, "b": 0.4, "c": 0.65}, winner="a"))
    assert record.margin == pytest.approx(0.05)
    assert record.decision_s == pytest.approx(0.0025)
    assert record.expected_latency_s == {"a": 1.0, "b": 1.0, "c": 1.0}


@pytest.mark.parametrize(("status", "code", "outcome"), [
    (200, None, "ok"), (400, "invalid_request", "client_error"), (413, None, "client_error"), (404, None, "client_error"),
    (503, "overloaded", "overloaded"), (503, "unavailable", "unavailable"), (504, "upstream_timeout", "timeout"),
    (500, "internal_error", "error"), (429, "rate_limit_exceeded", "rate_limited"),
])
def test_outcome_of_status(status, code, outcome):
    assert outcome_of(status, code) == outcome in OUTCOMES


def test_ensemble_tokens_are_split_by_the_model_that_spent_them():
    stages = [{"name": "propose", "calls": [{"model": "a", "prompt_tokens": 10, "completion_tokens": 5},
                                            {"model": "b", "prompt_tokens": 10, "completion_tokens": 7},
                                            {"model": "b", "status": "cancelled: deadline"}]}]
    trace = {**_auto_trace(winner="a", qualities={"a": 0.9, "b": 0.2}), "mode": "ensemble", "answered_by": "a",
             "ensemble": {"mode": "moa", "stages": stages, "early_stop": False}}
    record = Record("r", "chat", trace=trace, usage={"prompt_tokens": 50, "completion_tokens": 20})
    assert record.tokens == {"a": (40, 13), "b": (10, 7)}  # the aggregator's call is the rest of the usage
    assert record.ensemble_mode == "moa" and record.ensemble_stages == ["propose"]


def test_finish_json_reads_status_code_and_usage():
    record = Record("r", "chat")
    finish_json(record, 503, json.dumps({"error": {"code": "unavailable"}}).encode())
    assert (record.outcome, record.usage) == ("unavailable", {})
    finish_json(record, 200, json.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode())
    assert (record.outcome, record.usage["completion_tokens"]) == ("ok", 4)


def test_stream_is_relayed_unchanged_and_timed():
    packets = ['data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n', ": working\n\n",
               'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choices":[{"delta":{"content":"b"}}]}\n\n',
               "data: [DONE]\n\n"]
    finished = []

    async def source():
        for p in packets:
            await asyncio.sleep(0.01)
            yield p

    async def relay():
        return [p async for p in observe_stream(source(), Record("r", "chat", stream=True), finished.append)]

    assert asyncio.run(relay()) == packets
    [record] = finished
    assert record.ttft_s > 0 and record.itl_s is not None and record.seconds >= record.ttft_s
    assert record.usage == {"completion_tokens": 2}  # no usage chunk: counted from the content chunks


def test_in_band_stream_error_is_the_outcome():
    finished = []

    async def source():
        yield 'data: {"error": {"message": "gone", "type": "server_error", "code": "unavailable"}}\n\n'
        yield "data: [DONE]\n\n"

    async def relay():
        return [p async for p in observe_stream(source(), Record("r", "chat", stream=True), finished.append)]

    asyncio.run(relay())
    assert finished[0].outcome == "unavailable"


def test_request_id_is_serves_bounded_or_a_new_one():
    assert request_id("abc-123") == "abc-123"
    assert len(request_id("x" * 1000)) == 200
    assert request_id(None) != request_id(None)


def test_decision_log_finds_a_request_across_rotated_files(tmp_path):
    config = Observability(decision_log_mb=0.001, decision_log_files=50)  # ~1 KB per file: rotates every line or two
    first, second = JsonlLog(tmp_path, "decisions", "replica-a", config), JsonlLog(tmp_path, "decisions", "replica/b", config)
    for i in range(40):
        (first if i % 2 else second).write({"request_id": f"req-{i}", "n": i, "pad": "x" * 300})
    assert len(list(tmp_path.glob("decisions-*"))) > 10
    assert first.find("req-7")["n"] == 7 and second.find("req-8")["n"] == 8
    assert first.find("req-999") is None
    assert first.find("req-1") ["n"] == 1  # a prefix of other ids (req-10 ...) does not match


def test_decision_log_is_bounded(tmp_path):
    log = JsonlLog(tmp_path, "decisions", "bounded", Observability(decision_log_mb=0.001, decision_log_files=2))
    for i in range(200):
        log.write({"request_id": f"r{i}", "pad": "y" * 200})
    assert len(list(tmp_path.glob("decisions-bounded*"))) == 3
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 4 * 1100
    assert log.find("r199") is not None and log.find("r0") is None


def test_the_judge_samples_by_request_id_at_the_configured_rate():
    ids = [f"req-{i}" for i in range(20_000)]
    chosen = [i for i in ids if sampled(i, 0.1)]
    assert 0.09 < len(chosen) / len(ids) < 0.11
    assert chosen == [i for i in ids if sampled(i, 0.1)]  # the same ids every time, on every replica
    assert not any(sampled(i, 0.0) for i in ids[:1000]) and all(sampled(i, 1.0) for i in ids[:1000])


def test_the_quality_monitor_skips_samples_instead_of_queueing_them():
    """Under load the judge falls behind: gradings beyond judge_max_pending are dropped, and a failed one is no error."""
    graded, release = [], asyncio.Event()

    async def slow_judge(call):
        await release.wait()
        if call.messages[0]["content"] == "fail":
            raise RuntimeError("judge down")
        return Reply(call.model, "Yes", 10, 1, 0.1, first_token_top={"Yes": -0.1, "No": -2.5})

    async def scenario():
        monitor = QualityMonitor(Observability(judge="j", judge_sample_rate=1, judge_max_pending=2), slow_judge,
                                 lambda model, score: graded.append((model, round(score, 2))), None)
        for i, text in enumerate(["ok", "fail", "ok"]):
            monitor.submit(f"r{i}", "coder", [{"role": "user", "content": text}], text, "42")
        assert len(monitor.pending) == 2 and monitor.skipped == 1
        release.set()
        await asyncio.gather(*monitor.pending, return_exceptions=True)

    asyncio.run(scenario())
    assert graded == [("coder", 0.92)]  # P(Yes) = e^-0.1 / (e^-0.1 + e^-2.5); the failed grading left nothing


def test_quota_store_failures_are_counted_once_each_across_flushes():
    metrics = RouterMetrics(load_profile("tiny"), "test", "scorer")
    counted = []
    metrics.store_failures.inc = lambda value, tags=None: counted.append(value)
    for total in (3, 3, 5):  # the gate's running total, read once a second
        metrics.quota_store_failed(total)
        metrics.flush()
    assert counted == [3, 2]
