"""Benchmark: what the router costs. Prints numbers; not a test.

In one run, against one model of a served profile, with the same prompts, concurrency and fixed-length outputs:
  1. `bare`    — the model in a bare vLLM AsyncLLM engine in a subprocess, before the cluster starts (same engine kwargs);
  2. `direct`  — requests straight to the model's LLMServer deployment through a Ray Serve handle (no HTTP, no router);
  3. `pinned`  — HTTP through the router with `model: <name>`;
  4. `auto`    — HTTP through the router with `model: auto` (scorer + policy on every request; the answering mix is reported).

    python -m cluster.bench.router_overhead --profile local --model smollm2-135m --requests 64 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from cluster.bench.bare_engine import BareEngine

from router.catalog import default_cache_dir, load_profile

PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "Give three tips for staying focused while studying.",
    "What is the capital of Australia, and why was it chosen?",
    "Summarise the plot of Romeo and Juliet in three sentences.",
    "Describe how a rainbow forms.",
    "What are the health benefits of regular walking?",
    "Write a short friendly note inviting a colleague to lunch.",
    "Why do leaves change colour in autumn?",
]


@dataclass
class Result:
    mode: str
    requests: int
    seconds: float
    req_per_s: float
    output_tok_per_s: float
    p50_ms: float
    p95_ms: float
    answered_by: dict[str, int]


def summarise(mode: str, latencies: list[float], tokens: int, seconds: float, answered_by: Counter) -> Result:
    ordered = sorted(latencies)
    return Result(
        mode=mode,
        requests=len(latencies),
        seconds=round(seconds, 2),
        req_per_s=round(len(latencies) / seconds, 3),
        output_tok_per_s=round(tokens / seconds, 1),
        p50_ms=round(statistics.median(ordered) * 1000, 1),
        p95_ms=round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
        answered_by=dict(answered_by),
    )


async def run_closed_loop(call, requests: int, concurrency: int) -> tuple[list[float], int, float, Counter]:
    """`concurrency` workers issue `requests` calls back to back; each call returns (output tokens, model)."""
    latencies: list[float] = []
    tokens, answered = 0, Counter()
    queue = iter(range(requests))

    async def worker() -> None:
        nonlocal tokens
        for i in queue:
            start = time.perf_counter()
            n, model = await call(PROMPTS[i % len(PROMPTS)])
            latencies.append(time.perf_counter() - start)
            tokens += n
            answered[model] += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, tokens, time.perf_counter() - start, answered


def chat_body(model: str, prompt: str, max_tokens: int) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }


async def bench_http(base_url: str, model: str, args: argparse.Namespace) -> Result:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:

        async def call(prompt: str) -> tuple[int, str]:
            response = await client.post("/v1/chat/completions", json=chat_body(model, prompt, args.max_tokens))
            response.raise_for_status()
            body = response.json()
            return body["usage"]["completion_tokens"], body["model"]

        await call(PROMPTS[0])  # warm-up
        return summarise("auto" if model == "auto" else "pinned", *await run_closed_loop(call, args.requests, args.concurrency))


async def bench_direct(model: str, args: argparse.Namespace) -> Result:
    import ray
    from ray import serve
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    from cluster.local import pin_ray_auth_mode

    pin_ray_auth_mode()
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    handle = serve.get_deployment_handle(f"LLMServer:{model}", app_name="specialists")

    async def call(prompt: str) -> tuple[int, str]:
        request = ChatCompletionRequest.model_validate(chat_body(model, prompt, args.max_tokens))
        async for response in handle.options(stream=True).chat.remote(request, None):
            return response.usage.completion_tokens, response.model
        raise RuntimeError("no response")

    await call(PROMPTS[0])
    return summarise("direct", *await run_closed_loop(call, args.requests, args.concurrency))


async def bench_bare(model: str, args: argparse.Namespace) -> Result:
    """Runs inside the subprocess: the same weights and engine kwargs, no Ray, no HTTP."""
    from serve.llm_configs import engine_kwargs

    profile = load_profile(args.profile)
    spec = profile.specialist(model)
    bare = BareEngine(spec.model_source(default_cache_dir()), engine_kwargs(spec), dict(profile.engine_env))

    async def call(prompt: str) -> tuple[int, str]:
        ids, _, _ = await bare.generate(prompt, args.max_tokens, ignore_eos=True)
        return len(ids), model

    try:
        await call(PROMPTS[0])
        return summarise("bare", *await run_closed_loop(call, args.requests, args.concurrency))
    finally:
        bare.shutdown()


def bare_in_subprocess(args: argparse.Namespace) -> Result:
    """The bare engine gets the machine to itself, and its memory is freed before the cluster starts."""
    cmd = [sys.executable, "-m", "cluster.bench.router_overhead", "--bare-only", *sys.argv[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"bare engine run failed:\n{done.stderr[-3000:]}")
    return Result(**json.loads(done.stdout.strip().splitlines()[-1]))


def print_table(results: list[Result]) -> None:
    print(f"{'mode':8} {'req/s':>8} {'tok/s':>8} {'p50 ms':>9} {'p95 ms':>9}  answered by")
    for r in results:
        print(f"{r.mode:8} {r.req_per_s:8.3f} {r.output_tok_per_s:8.1f} {r.p50_ms:9.1f} {r.p95_ms:9.1f}  {r.answered_by}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.router_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="local")
    parser.add_argument("--model", default="smollm2-135m", help="the specialist compared (auto should route the prompts here)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--base-url", help="use this already running router instead of starting a cluster")
    parser.add_argument("--skip-bare", action="store_true", help="skip the bare-engine baseline")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks/router_overhead.json"))
    parser.add_argument("--bare-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.bare_only:
        print(json.dumps(asdict(asyncio.run(bench_bare(args.model, args)))))
        return
    results = [] if args.skip_bare else [bare_in_subprocess(args)]
    if args.base_url:
        results += asyncio.run(_served(args.base_url, args))
    else:
        from cluster.local import LocalCluster

        with LocalCluster(args.profile) as cluster:
            results += asyncio.run(_served(cluster.base_url, args))
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("profile", "model", "requests", "concurrency", "max_tokens")}
    args.output.write_text(json.dumps({"settings": settings, "results": [asdict(r) for r in results]}, indent=2) + "\n")
    print(f"wrote {args.output}")


async def _served(base_url: str, args: argparse.Namespace) -> list[Result]:
    return [await bench_direct(args.model, args), await bench_http(base_url, args.model, args), await bench_http(base_url, "auto", args)]


if __name__ == "__main__":
    main()
