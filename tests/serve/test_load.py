"""The live load snapshot: Serve's metrics parsed from real Prometheus text, and visible degradation to defaults."""

import asyncio
import time

import httpx
import pytest

from router.catalog import load_profile
from serve.cluster_metrics import STALE_AFTER_S, ServeMetricsPoller, ServeSample, parse_serve_metrics
from router.policy import DEFAULT_SERVICE_S
from serve.load import LATENCY_FRESH_S, LATENCY_HALF_LIFE_S, LoadTracker, slots_per_replica

# Trimmed from a real `curl 127.0.0.1:8080/metrics` of the tiny profile (Ray 2.60): two coder replicas.
METRICS = """\
# HELP ray_serve_deployment_replica_healthy Tracks whether this deployment replica is healthy.
# TYPE ray_serve_deployment_replica_healthy gauge
ray_serve_deployment_replica_healthy{application="specialists",deployment="LLMServer:tiny-coder",replica="a"} 1.0
ray_serve_deployment_replica_healthy{application="specialists",deployment="LLMServer:tiny-coder",replica="b"} 1.0
ray_serve_deployment_replica_healthy{application="specialists",deployment="router",replica="c"} 1.0
# HELP ray_serve_replica_processing_queries The current number of queries being processed.
# TYPE ray_serve_replica_processing_queries gauge
ray_serve_replica_processing_queries{application="specialists",deployment="LLMServer:tiny-coder",replica="a"} 4.0
ray_serve_replica_processing_queries{application="specialists",deployment="LLMServer:tiny-coder",replica="b"} 3.0
# HELP ray_serve_deployment_queued_queries The current number of queries to this deployment waiting to be assigned to a replica.
# TYPE ray_serve_deployment_queued_queries gauge
ray_serve_deployment_queued_queries{application="specialists",deployment="LLMServer:tiny-coder",handle="h1"} 2.0
ray_serve_deployment_queued_queries{application="specialists",deployment="LLMServer:tiny-coder",handle="h2"} 1.0
"""


@pytest.fixture
def tiny():
    return load_profile("tiny")


def test_serve_metrics_are_summed_per_specialist():
    samples = parse_serve_metrics(METRICS, ["tiny-coder", "tiny-general"], at=1.0)
    assert samples == {"tiny-coder": ServeSample(replicas=2, ongoing=7, queued=3, at=1.0)}


def test_fresh_metrics_feed_the_snapshot(tiny):
    poller = ServeMetricsPoller("unused", tiny.names)
    poller.samples = parse_serve_metrics(METRICS, tiny.names, at=time.monotonic())
    load = LoadTracker(tiny, poller).snapshot()
    coder, general = load["tiny-coder"], load["tiny-general"]
    assert (coder.replicas, coder.serve_ongoing, coder.serve_queued, coder.pending) == (2, 7, 3, 10)
    assert not any("serve" in d for d in coder.defaults)
    assert general.serve_ongoing is None and any("stale" in d for d in general.defaults)


def test_stale_metrics_degrade_to_min_replicas_and_say_so(tiny):
    poller = ServeMetricsPoller("unused", tiny.names)
    poller.samples = parse_serve_metrics(METRICS, tiny.names, at=time.monotonic() - STALE_AFTER_S - 1)
    coder = LoadTracker(tiny, poller).snapshot()["tiny-coder"]
    assert coder.replicas == tiny.specialist("tiny-coder").deployment.autoscaling.min_replicas
    assert coder.serve_ongoing is None and any("stale" in d for d in coder.defaults)


def test_no_healthy_replica_reported_falls_back_to_min_replicas_and_says_so(tiny):
    """Right after start-up Serve exports its queue series before its health series."""
    without_health = "\n".join(line for line in METRICS.splitlines() if "replica_healthy" not in line)
    poller = ServeMetricsPoller("unused", tiny.names)
    poller.samples = parse_serve_metrics(without_health, tiny.names, at=time.monotonic())
    coder = LoadTracker(tiny, poller).snapshot()["tiny-coder"]
    assert coder.replicas == tiny.specialist("tiny-coder").deployment.autoscaling.min_replicas
    assert coder.serve_ongoing == 7 and any("none healthy" in d for d in coder.defaults)


def test_without_metrics_url_router_side_load_stands_alone(tiny):
    tracker = LoadTracker(tiny)
    with tracker.track("tiny-coder"):
        busy = tracker.snapshot()["tiny-coder"]
    idle = tracker.snapshot()["tiny-coder"]
    assert busy.in_flight == 1 and idle.in_flight == 0 and idle.ewma_latency_s is not None
    assert any("no metrics_url" in d for d in idle.defaults) and not any("latency" in d for d in idle.defaults)
    assert busy.slots_per_replica == slots_per_replica(tiny.specialist("tiny-coder")) == 4  # engine max_num_seqs


def test_an_unreachable_metrics_endpoint_keeps_serving_and_records_why(tiny):
    poller = ServeMetricsPoller("http://127.0.0.1:9/metrics", tiny.names)  # nothing listens on port 9

    async def poll_once():
        async with httpx.AsyncClient(timeout=1) as client:
            await poller.poll(client)

    asyncio.run(poll_once())
    assert poller.last_error and poller.fresh("tiny-coder") is None


def test_a_stale_latency_estimate_ages_towards_the_default_and_says_so(tiny):
    """A specialist shunned after one slow spell gets no new samples; its estimate must not stay high forever."""
    tracker = LoadTracker(tiny)
    counters = tracker._counters["tiny-coder"]
    counters.ewma_latency_s, counters.sampled_at = 41.0, time.monotonic()
    assert tracker.snapshot()["tiny-coder"].ewma_latency_s == 41.0
    counters.sampled_at = time.monotonic() - LATENCY_FRESH_S - LATENCY_HALF_LIFE_S
    aged = tracker.snapshot()["tiny-coder"]
    assert aged.ewma_latency_s == pytest.approx(DEFAULT_SERVICE_S + 20.0, rel=0.01)  # one half-life: halfway there
    assert any("aged to" in d for d in aged.defaults)
    with tracker.track("tiny-coder"):  # something in flight: the estimate is live, not aged
        assert tracker.snapshot()["tiny-coder"].ewma_latency_s == 41.0


def test_an_unmeasured_specialist_is_priced_at_its_catalog_speed_and_a_stale_one_ages_towards_that():
    """Before its first answer a 6.6 tok/s model must not look as fast as a 16 tok/s one."""
    local = load_profile("local")
    tracker = LoadTracker(local)
    coder, small = local.specialist("qwen-coder-1.5b"), local.specialist("qwen-coder-0.5b")
    expected = local.router.expected_output_tokens
    for max_tokens, tokens in ((64, 64), (None, expected), (100_000, expected)):  # max_tokens caps, never raises
        load = tracker.snapshot(max_tokens)
        assert load[coder.name].expected_latency_s() == pytest.approx(tokens / coder.decode_tok_s)
        assert load[small.name].expected_latency_s() == pytest.approx(tokens / small.decode_tok_s)
    assert any(f"64 tokens at decode_tok_s {coder.decode_tok_s:g}" in d for d in tracker.snapshot(64)[coder.name].defaults)
    counters = tracker._counters[coder.name]
    counters.ewma_latency_s, counters.sampled_at = 1.0, time.monotonic() - LATENCY_FRESH_S - LATENCY_HALF_LIFE_S
    prior_s = 64 / coder.decode_tok_s
    assert tracker.snapshot(64)[coder.name].ewma_latency_s == pytest.approx((1.0 + prior_s) / 2, rel=0.01)


def test_the_mean_age_of_requests_in_flight_grows_until_they_finish(tiny):
    """What a stalled engine shows before any request to it finishes (the EWMA learns only from finished ones)."""
    tracker = LoadTracker(tiny)
    assert tracker.snapshot()["tiny-coder"].in_flight_age_s is None
    with tracker.track("tiny-coder"):
        time.sleep(0.1)
        with tracker.track("tiny-coder"):
            both = tracker.snapshot()["tiny-coder"]
            assert both.in_flight == 2 and 0.05 <= both.in_flight_age_s < 0.1  # one ~0.1 s old, one just sent
        time.sleep(0.1)
        assert tracker.snapshot()["tiny-coder"].in_flight_age_s >= 0.2  # the first, still running
    assert tracker.snapshot()["tiny-coder"].in_flight_age_s is None


def test_other_metrics_in_the_text_are_skipped_without_changing_the_sums():
    """A Ray node exports ~1 MB of other series; only the named ones are parsed, and a name that merely starts
    like a wanted one is not summed in."""
    noise = """\
# HELP ray_serve_replica_processing_queries_total A made-up counter whose name extends a wanted one.
# TYPE ray_serve_replica_processing_queries_total counter
ray_serve_replica_processing_queries_total{application="specialists",deployment="LLMServer:tiny-coder",replica="a"} 99.0
# HELP ray_serve_http_request_latency_ms Latency.
# TYPE ray_serve_http_request_latency_ms histogram
ray_serve_http_request_latency_ms_bucket{application="specialists",deployment="LLMServer:tiny-coder",le="1.0"} 5.0
ray_serve_http_request_latency_ms_bucket{application="specialists",deployment="LLMServer:tiny-coder",le="+Inf"} 7.0
ray_serve_http_request_latency_ms_count{application="specialists",deployment="LLMServer:tiny-coder"} 7.0
ray_serve_http_request_latency_ms_sum{application="specialists",deployment="LLMServer:tiny-coder"} 3.0
"""
    samples = parse_serve_metrics(noise + METRICS, ["tiny-coder", "tiny-general"], at=1.0)
    assert samples == {"tiny-coder": ServeSample(replicas=2, ongoing=7, queued=3, at=1.0)}
