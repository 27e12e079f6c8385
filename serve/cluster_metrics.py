"""Ray Serve's own view of each specialist (healthy replicas, requests at replicas, requests queued in handles),
polled once a second from Prometheus text: the live load that one router replica cannot see by itself.

The source is the profile's `ingress.metrics_url`: the node's Ray metrics agent on a single machine
(`ray start --metrics-export-port`), or a Prometheus `/federate` URL on a cluster -- both speak the same text
format. A sample older than STALE_AFTER_S (the poll failed, or the series vanished) is not used: the load
snapshot falls back to defaults and says so in the decision trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("ray.serve")

POLL_INTERVAL_S = 1.0
STALE_AFTER_S = 3.0
SERIES = {  # Ray Serve metric -> field of ServeSample; all summed over the deployment's series
    "ray_serve_deployment_replica_healthy": "replicas",
    "ray_serve_replica_processing_queries": "ongoing",
    "ray_serve_deployment_queued_queries": "queued",
}


@dataclass(frozen=True)
class ServeSample:
    replicas: int
    ongoing: int
    queued: int
    at: float  # time.monotonic() of the poll that read it


DEPLOYMENT_PREFIX = "LLMServer:"  # Ray Serve LLM's default, kept by `serve.app` for its LLMServer subclass


def deployment_name(specialist: str) -> str:
    """The Serve deployment that `serve.app` creates for a specialist."""
    return f"{DEPLOYMENT_PREFIX}{specialist}"


def _lines_of(text: str, metrics: set[str]) -> str:
    """Only the named metrics' lines: a Ray node exports ~1 MB of histograms, and parsing all of it took ~120 ms
    of the ingress's event loop every poll (measured on `local`), against ~1 ms with this string filter first."""
    prefixes = tuple(metrics) + tuple(f"# {kind} {m} " for m in metrics for kind in ("HELP", "TYPE"))
    return "\n".join(line for line in text.splitlines() if line.startswith(prefixes)) + "\n"


def sum_by_deployment(text: str, metrics: set[str], label: str = "deployment") -> dict[str, dict[str, float]]:
    """Prometheus text -> {deployment: {metric: sum over its series}} for the named metrics (vLLM's own
    metrics carry the specialist in `model_name` instead: pass that as the label)."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(metrics, 0.0))
    for family in text_string_to_metric_families(_lines_of(text, metrics)):
        for sample in family.samples:
            deployment = sample.labels.get(label)
            if sample.name in metrics and deployment:
                totals[deployment][sample.name] += sample.value
    return dict(totals)


def parse_serve_metrics(text: str, specialists: list[str], at: float) -> dict[str, ServeSample]:
    """The SERIES of each specialist's deployment; specialists without any series are left out."""
    totals = sum_by_deployment(text, set(SERIES))
    samples = {}
    for name in specialists:
        if (found := totals.get(deployment_name(name))) is not None:
            samples[name] = ServeSample(**{SERIES[m]: round(v) for m, v in found.items()}, at=at)
    return samples


class ServeMetricsPoller:
    """Keeps the latest ServeSample per specialist; one background task per router replica."""

    def __init__(self, url: str, specialists: list[str]) -> None:
        self.url = url
        self.specialists = specialists
        self.samples: dict[str, ServeSample] = {}
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=POLL_INTERVAL_S) as client:
            while True:
                await self.poll(client)
                await asyncio.sleep(POLL_INTERVAL_S)

    async def poll(self, client: httpx.AsyncClient) -> None:
        try:
            response = await client.get(self.url)
            response.raise_for_status()
            self.samples.update(parse_serve_metrics(response.text, self.specialists, time.monotonic()))
            self.last_error = None
        except (httpx.HTTPError, ValueError) as error:  # keep the last samples; they go stale on their own
            if self.last_error is None:
                log.warning("serve metrics from %s unavailable: %s", self.url, error)
            self.last_error = f"{type(error).__name__}: {error}"

    def fresh(self, name: str) -> ServeSample | None:
        sample = self.samples.get(name)
        if sample is None or time.monotonic() - sample.at > STALE_AFTER_S:
            return None
        return sample
