"""Open-loop load test of the router: `python -m cluster.loadtest --shape step --base 0.5 --peak 4 --duration 180`.

Mixed-role prompts from the router's dataset, each fitting every specialist the run may reach
(cluster/loadtest/prompts.py), are sent as OpenAI streaming chat requests to 127.0.0.1 on an
arrival schedule (cluster/loadtest/shapes.py); each request is made and timed (TTFT, latency, tokens) by vLLM's
own benchmark client (`vllm.benchmarks.lib.endpoint_request_func`, what `vllm bench serve` uses), so the numbers
mean what they mean in vLLM's benchmarks. Meanwhile Serve's REST API (replicas and the autoscaler's target per
deployment) and its Prometheus metrics (requests per deployment) are sampled every second. Writes
`report.json` (config, summary, windows), `details.json` (every request and sample) and `report.png`
(cluster/loadtest/report.py) into --out; with `--prometheus-url` (as `make run` starts it), also the router dashboard's
panels over the run as `dashboard*.png` (cluster/observe/render.py).

`--policy router` (default) lets the router choose (`--model auto`, knobs in `--router`; `{"latency": 0,
"cost": 0}` makes it quality-only). `--policy pow2` / `random` are the quality-blind baselines, run here in
the client: it pins each request to a specialist -- the one with fewer of its own requests in flight out of two
drawn at random, or one at random. Every request's answering specialist (the router's `x-routed-model` header)
and the trained scorer's predicted quality for it are recorded, so runs of different policies compare on
latency and on the quality they delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import aiohttp
from tqdm import tqdm
from vllm.benchmarks.lib.endpoint_request_func import (
    RequestFuncInput,
    RequestFuncOutput,
    async_request_openai_chat_completions,
)

from cluster.loadtest.prompts import mixed_prompts
from cluster.loadtest.report import summarise, write_plot
from cluster.loadtest.shapes import SHAPES, LoadShape, arrival_times
from cluster.observe.render import render
from cluster.serve_status import APPLICATIONS_PATH, replicas_by_deployment
from cluster.loadtest.scored_prompts import predicted_quality
from router.catalog import default_cache_dir, load_profile
from serve.cluster_metrics import sum_by_deployment

HOST = "127.0.0.1"
WATCH_INTERVAL_S = 1.0
REQUEST_COUNTER = "ray_serve_deployment_request_counter_total"


class ClientBalancer:
    """The quality-blind baselines: pin each request to a specialist by this client's own in-flight counts."""

    def __init__(self, policy: str, names: list[str], seed: int) -> None:
        self.policy, self.names, self.rng = policy, names, random.Random(seed)
        self.in_flight = dict.fromkeys(names, 0)

    def pick(self) -> str:
        if self.policy == "random":
            return self.rng.choice(self.names)
        a, b = self.rng.sample(self.names, 2)
        return a if self.in_flight[a] <= self.in_flight[b] else b

    @contextlib.contextmanager
    def request(self) -> Iterator[str]:
        """Pick a specialist and count the request in flight on it until the block ends, however it ends."""
        model = self.pick()
        self.in_flight[model] += 1
        try:
            yield model
        finally:
            self.in_flight[model] -= 1


def routed_model_recorder(answered_by: dict[str, str]) -> aiohttp.TraceConfig:
    """Record each response's `x-routed-model` by request id (vLLM's client returns no headers)."""

    async def on_request_end(session, context, params: aiohttp.TraceRequestEndParams) -> None:
        if (request_id := params.headers.get("x-request-id")) and (model := params.response.headers.get("x-routed-model")):
            answered_by[request_id] = model

    config = aiohttp.TraceConfig()
    config.on_request_end.append(on_request_end)
    return config


class ServeWatcher:
    """Samples replicas/target per deployment (Serve REST API) and request counters (Prometheus) every second."""

    def __init__(self, dashboard_url: str, metrics_url: str | None) -> None:
        self.dashboard_url = dashboard_url
        self.metrics_url = metrics_url
        self.samples: list[dict] = []

    async def run(self, session: aiohttp.ClientSession, start: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            sample = {"t": round(time.perf_counter() - start, 2), **await self._read(session)}
            self.samples.append(sample)
            try:
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
            except asyncio.TimeoutError:
                pass

    async def _read(self, session: aiohttp.ClientSession) -> dict:
        sample: dict = {}
        try:
            async with session.get(f"{self.dashboard_url}{APPLICATIONS_PATH}") as response:
                sample["deployments"] = replicas_by_deployment(await response.json())
        except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError) as error:
            sample["error"] = f"serve status: {error}"
        if self.metrics_url:
            try:
                async with session.get(self.metrics_url) as response:
                    totals = sum_by_deployment(await response.text(), {REQUEST_COUNTER})
                sample["requests"] = {name: m[REQUEST_COUNTER] for name, m in totals.items()}
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                sample["error"] = f"metrics: {error}"
        return sample


async def run(args: argparse.Namespace) -> dict:
    shape = LoadShape(args.shape, args.base, args.peak, args.duration, burst_s=args.burst_s, period_s=args.period_s)
    times = arrival_times(shape, args.max_requests, args.seed)
    profile = load_profile(args.profile)
    reachable = [profile.specialist(args.model)] if args.policy == "router" and args.model != "auto" else profile.specialists
    prompts = mixed_prompts(len(times), args.seed, reachable, default_cache_dir(), args.max_tokens)
    quality = predicted_quality(profile, [p["prompt"] for p in prompts], default_cache_dir())
    balancer = ClientBalancer(args.policy, profile.names, args.seed) if args.policy != "router" else None
    answered_by: dict[str, str] = {}
    extra_body = {"router": json.loads(args.router)} if args.router else None
    url = f"{args.base_url}/v1/chat/completions"
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    watcher = ServeWatcher(args.dashboard_url, args.metrics_url)
    results: list[dict] = []
    progress = tqdm(total=len(times), desc=f"{args.shape} load", unit="req", disable=args.quiet)

    async with aiohttp.ClientSession(timeout=timeout, trace_configs=[routed_model_recorder(answered_by)]) as session:
        start = time.perf_counter()
        stop = asyncio.Event()
        watch = asyncio.create_task(watcher.run(session, start, stop))

        async def one(i: int, at: float, item: dict, scores: dict[str, float]) -> None:
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
            with balancer.request() if balancer else contextlib.nullcontext(args.model) as model:
                request = RequestFuncInput(
                    prompt=item["prompt"], api_url=url, prompt_len=0, output_len=args.max_tokens, model=model,
                    extra_body=extra_body, request_id=f"loadtest-{args.seed}-{i}",
                )
                output: RequestFuncOutput = await async_request_openai_chat_completions(request, session)
            row = {k: v for k, v in asdict(output).items() if k in ("success", "latency", "ttft", "output_tokens", "error")}
            by = answered_by.get(request.request_id)
            results.append({
                **row, "sent_s": round(output.start_time - start, 3), "domain": item["domain"], "answered_by": by,
                "predicted_quality": round(scores[by], 4) if by in scores else None,
            })
            progress.update()

        await asyncio.gather(*(one(i, at, item, q) for i, (at, item, q) in enumerate(zip(times, prompts, quality))))
        await asyncio.sleep(args.tail)  # keep watching: the scale-down after the load is part of the run
        stop.set()
        await watch
    progress.close()
    config = {k: v for k, v in vars(args).items() if k not in ("out", "quiet")}
    return summarise(config, shape, results, watcher.samples)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=f"http://{HOST}:8000")
    parser.add_argument("--dashboard-url", default=f"http://{HOST}:8265")
    parser.add_argument("--metrics-url", default=f"http://{HOST}:8080/metrics", help="Prometheus text; '' to skip")
    parser.add_argument("--prometheus-url", default="", help="a Prometheus scraping the cluster (e.g. http://127.0.0.1:9090): "
                        "the dashboard's panels over the run go into --out as PNGs")
    parser.add_argument("--shape", choices=SHAPES, default="step")
    parser.add_argument("--base", type=float, default=0.5, help="requests/s outside the peak")
    parser.add_argument("--peak", type=float, default=2.0, help="requests/s at the peak")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of arrivals")
    parser.add_argument("--burst-s", type=float, default=10.0)
    parser.add_argument("--period-s", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=500, help="hard bound on requests sent")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--profile", default="local", help="the served profile: its specialists and scorer")
    parser.add_argument("--policy", choices=("router", "pow2", "random"), default="router",
                        help="router: --model/--router decide; pow2/random: quality-blind baselines pinned by this client")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--router", default="", help='JSON of the request\'s router knobs, e.g. \'{"latency": 0}\'')
    parser.add_argument("--request-timeout", type=float, default=300.0)
    parser.add_argument("--tail", type=float, default=3.0, help="seconds to keep sampling Serve after the last answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(".cache/loadtest"), help="folder for report.json, details.json and report.png")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if not args.base_url.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("load tests target this machine only (--base-url http://127.0.0.1:…)")
    return args


DETAILS = ("serve", "requests")  # per-sample and per-request records: large, for reruns of the analysis, not for docs/


def write_report(report: dict, out: Path) -> None:
    """report.json (config, summary, windows: what a benchmark page commits), details.json, report.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({k: v for k, v in report.items() if k not in DETAILS}, indent=2) + "\n")
    (out / "details.json").write_text(json.dumps({k: report[k] for k in DETAILS}) + "\n")
    write_plot(report, out / "report.png")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    report = asyncio.run(run(args))
    write_report(report, args.out)
    if args.prometheus_url:  # a minute before the start, so the panels' 1-minute rates are filled when the load begins
        render(args.prometheus_url, args.out, started - 60, time.time())
    json.dump(report["summary"], sys.stdout, indent=2)
    print(f"\nwrote report.json, details.json, report.png{' and dashboard*.png' if args.prometheus_url else ''} to {args.out}")


if __name__ == "__main__":
    main()
