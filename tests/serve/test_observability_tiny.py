"""Observability end to end on real parts: the tiny profile on Ray Serve + vLLM, the real Prometheus scraping Ray through
its service-discovery file with our alert rules, the real Alertmanager posting to a local webhook, the decision log
and the quality monitor. The dashboard's panels and the alert expressions are run against what this traffic left.
"""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from matplotlib import image

from cluster.local import LocalCluster
from cluster.loadtest import run as loadtest
from cluster.observe import panels
from cluster.observe.alerts import alerts
from cluster.reliability.processes import engine_core_of
from router.catalog import load_profile
from serve.quality import sampled
from tests.cluster.observe_helpers import WebhookReceiver
from tests.serve.tiny import CODER, GENERAL, decision

pytestmark = pytest.mark.cluster

HI = [{"role": "user", "content": "Say hello."}]
CLEAR = [{"role": "user", "content": "What is 6 * 7?"}]  # routemoa keeps tiny-coder alone and stops early
SCRAPE_S = 1
JUDGE_RATE = 0.1  # the quality monitor, off in the tiny profile, grades this share of requests here


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> Iterator[tuple[LocalCluster, WebhookReceiver]]:
    """A fresh Prometheus and Alertmanager state: a run before this one must not have fired (and notified) already."""
    with WebhookReceiver() as webhook, LocalCluster("tiny", ready_timeout_s=600, alert_webhook=webhook.url,
                                                    scrape_interval_s=SCRAPE_S, observe_dir=tmp_path_factory.mktemp("observe"),
                                                    observability={"judge_sample_rate": JUDGE_RATE}) as cluster:
        yield cluster, webhook


@pytest.fixture(scope="module")
def http(observed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=observed[0].base_url, timeout=120) as client:
        yield client


def prometheus(observed, expr: str) -> list[dict]:
    """An instant query; a query Prometheus refuses fails the test with its error."""
    reply = httpx.get(f"{observed[0].observers.prometheus_url}/api/v1/query", params={"query": expr}, timeout=30).json()
    assert reply["status"] == "success", (expr, reply)
    return reply["data"]["result"]


def scraped(observed, expr: str, timeout_s: float = 60) -> list[dict]:
    """The query's result once Prometheus has it: Ray exports each second and Prometheus scrapes each SCRAPE_S."""
    deadline = time.monotonic() + timeout_s
    while not (result := prometheus(observed, expr)):
        assert time.monotonic() < deadline, f"Prometheus has no data for {expr} after {timeout_s} s"
        time.sleep(SCRAPE_S)
    return result


def sampled_id(prefix: str) -> str:
    """A request id the quality monitor samples at the tiny profile's rate (the sample is a hash of the id)."""
    return next(f"{prefix}-{i}" for i in range(10_000) if sampled(f"{prefix}-{i}", JUDGE_RATE))


def chat(http: httpx.Client, request_id: str | None = None, **body) -> httpx.Response:
    headers = {"x-request-id": request_id} if request_id else {}
    return http.post("/v1/chat/completions", json={"max_tokens": 4, "messages": HI, **body}, headers=headers)


def test_a_request_is_found_in_the_decision_log_by_its_id(http: httpx.Client):
    response = chat(http, "find-me-1", model="auto")
    assert response.status_code == 200 and response.headers["x-request-id"] == "find-me-1"
    record = http.get("/v1/router/decisions/find-me-1").json()
    assert record["answered_by"] == decision(response)["answered_by"] and record["reason"] == "score"
    assert record["usage"]["completion_tokens"] > 0 and record["trace"]["winner"] in (CODER, GENERAL)
    assert "messages" not in record and "prompt" not in record and len(record["prompt_sha256_16"]) == 16  # no text by default
    missing = http.get("/v1/router/decisions/never-sent")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "decision_not_found"


def test_sampled_answers_are_graded_into_metrics_and_the_judged_dataset(observed, http: httpx.Client):
    ids = [sampled_id(f"judged-{i}") for i in range(2)]
    for request_id in ids:
        assert chat(http, request_id, model=CODER).status_code == 200
    assert chat(http, sampled_id("judged-stream"), model=GENERAL, stream=True).status_code == 200
    folder = observed[0].cache_dir / "observe" / "judged"
    deadline = time.monotonic() + 60
    while not all(any(i in p.read_text() for p in folder.glob("judged-*.jsonl*")) for i in ids):
        assert time.monotonic() < deadline, "the judge did not grade the sampled requests within 60 s"
        time.sleep(1)
    assert scraped(observed, "sum(ray_router_judge_score_count)")[0]["value"][1] != "0"


def test_traffic_of_every_kind_reaches_prometheus(observed, http: httpx.Client):
    for _ in range(3):
        assert chat(http, model="auto").status_code == 200
        assert chat(http, model="auto", stream=True).status_code == 200
    assert chat(http, model="auto", messages=CLEAR, router={"ensemble": {"mode": "routemoa"}}).status_code == 200
    same = {"model": "ensemble-vote", "messages": [{"role": "user", "content": "Name a prime number."}], "temperature": 0}
    assert chat(http, **same).status_code == 200 and decision(chat(http, **same))["cache"]["hit"] is True
    assert chat(http, model="no-such-model").status_code == 404
    scraped(observed, 'ray_router_cache_lookups_total{result="hit"}')


def test_a_killed_specialist_fires_an_alert_through_alertmanager(observed, http: httpx.Client):
    """Kill tiny-general's engine for real: its requests fail over, and the page reaches the webhook."""
    engine = engine_core_of(GENERAL)
    engine.kill()
    engine.wait(30)
    pinned = http.post("/v1/chat/completions", json={"model": GENERAL, "messages": HI, "max_tokens": 2},
                       headers={"x-request-timeout": "20"})
    assert pinned.status_code in (503, 504), pinned.text
    routed = chat(http, model="auto", messages=[{"role": "user", "content": "What are the symptoms of influenza?"}])
    assert routed.status_code == 200 and decision(routed)["answered_by"] == CODER
    alert = observed[1].wait_for_alert("SpecialistFailing", timeout_s=120, specialist=GENERAL)
    assert alert["labels"]["severity"] == "page"
    deadline = time.monotonic() + 300
    while http.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, "Serve did not restore the specialist within 5 minutes"
        time.sleep(5)


def test_every_dashboard_panel_query_returns_data(observed, http: httpx.Client):
    """Gauges (in flight, vLLM running/waiting, KV cache) are exported only while set, so keep both engines busy for a
    few seconds of scrapes first."""
    long = {"max_tokens": 192, "ignore_eos": True}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda model: chat(http, model=model, **long), [CODER, GENERAL, "auto", "auto"]))
    assert [a.status_code for a in answers] == [200] * 4
    time.sleep(3 * SCRAPE_S)
    empty = [(p.title, q.expr) for p in panels.panels() for q in p.queries if not prometheus(observed, q.expr)]
    assert not empty, f"panels without data after the traffic above: {empty}"


def test_every_alert_expression_evaluates_and_every_rule_is_healthy(observed):
    for alert in alerts(load_profile("tiny")):
        prometheus(observed, alert.expr)  # fails on a query error
    rules = httpx.get(f"{observed[0].observers.prometheus_url}/api/v1/rules", timeout=30).json()["data"]["groups"]
    loaded = [r for group in rules for r in group["rules"]]
    assert len(loaded) == len(alerts(load_profile("tiny"))) and {r["health"] for r in loaded} == {"ok"}, loaded


def test_a_load_tests_report_carries_the_dashboard_drawn_from_the_live_prometheus(observed, tmp_path):
    loadtest.main(["--profile", "tiny", "--shape", "step", "--base", "2", "--peak", "2", "--duration", "8", "--max-tokens", "8",
                   "--base-url", observed[0].base_url, "--prometheus-url", observed[0].observers.prometheus_url,
                   "--out", str(tmp_path), "--quiet"])
    drawn = sorted(p.name for p in tmp_path.glob("dashboard*.png"))
    assert {"dashboard.png", "dashboard-traffic.png", "dashboard-latency.png", "dashboard-backends.png"} <= set(drawn)
    for name in ("dashboard.png", "dashboard-traffic.png", "dashboard-latency.png", "dashboard-backends.png"):
        pixels = image.imread(tmp_path / name)[..., :3].reshape(-1, 3)
        coloured = (pixels.max(axis=1) - pixels.min(axis=1)) > 0.1  # data lines; titles, axes and "no data" are grey
        assert coloured.sum() > 1000, f"{name} has no data drawn"
