"""Benchmark: replica choice inside a deployment -- Ray's default power of two choices against Ray Serve LLM's
prefix-cache affinity router. Prints numbers; not a test.

    python -m cluster.bench.replica_router --rate 3 --duration 60

The `routing-bench` profile (models.yaml) deploys one tiny model three times, two replicas each: `tiny-pow2` (Ray's
default), `tiny-affinity` (`request_router: {kind: prefix_affinity}`) and `tiny-affinity-gated` (the same, but
pow2 while the replicas' queues differ by more than 2); each replica's KV cache holds about half of the
workload's shared prefixes. The workload is what affinity is for: many requests over a few long
documents (the system prompt), each with its own short question -- RAG, or chat sessions over a shared
context. The same open-loop arrivals go to each deployment in turn. vLLM's own prefix-cache counters
(`ray_vllm_prefix_cache_{hits,queries}_total`, per model) give the hit rate; vLLM's benchmark client gives TTFT.
On tiny models a prefix hit saves little time, so the hit rate is the result here; on a 7B model every hit
token is prefill compute not spent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_chat_completions

from cluster.loadtest.shapes import LoadShape, arrival_times
from router.training import data
from serve.cluster_metrics import sum_by_deployment

PROFILE = "routing-bench"
DEPLOYMENTS = ("tiny-pow2", "tiny-affinity", "tiny-affinity-gated")
COUNTERS = {"ray_vllm_prefix_cache_hits_total", "ray_vllm_prefix_cache_queries_total"}
MAX_REQUESTS = 10_000  # arrivals are bounded by --duration; this only caps a typo'd --rate
METRICS_LAG_S = 4  # engine counters reach the metrics agent every RAY_metrics_report_interval_ms (1 s) plus export


def workload(n_documents: int, document_chars: int, requests: int, seed: int) -> list[list[dict]]:
    """Chat messages per request: one of the documents as the system prompt, a short dataset question as the user turn."""
    rng = random.Random(seed)
    items = data.load()
    rng.shuffle(items)
    documents, text = [], ""
    for item in items:
        text += item["prompt"] + "\n\n"
        if len(text) >= document_chars:
            documents.append(f"Document {len(documents)}:\n{text[:document_chars]}")
            text = ""
            if len(documents) == n_documents:
                break
    questions = [i["prompt"] for i in items if len(i["prompt"]) < 200]
    return [
        [{"role": "system", "content": rng.choice(documents)}, {"role": "user", "content": rng.choice(questions)}]
        for _ in range(requests)
    ]


def prefix_counters(metrics_url: str) -> dict[str, tuple[float, float]]:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        totals = sum_by_deployment(response.read().decode(), COUNTERS, label="model_name")
    return {name: (t["ray_vllm_prefix_cache_hits_total"], t["ray_vllm_prefix_cache_queries_total"]) for name, t in totals.items()}


async def send(base_url: str, model: str, messages: list[list[dict]], times: list[float], max_tokens: int) -> list:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        start = time.perf_counter()

        async def one(at: float, chat: list[dict]):
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
            request = RequestFuncInput(
                prompt="", chat_messages=chat, api_url=f"{base_url}/v1/chat/completions", prompt_len=0,
                output_len=max_tokens, model=model,
            )
            return await async_request_openai_chat_completions(request, session)

        return await asyncio.gather(*(one(at, chat) for at, chat in zip(times, messages)))


def measure(base_url: str, metrics_url: str, model: str, messages: list, times: list[float], max_tokens: int) -> dict:
    before = prefix_counters(metrics_url).get(model, (0.0, 0.0))
    outputs = asyncio.run(send(base_url, model, messages, times, max_tokens))
    time.sleep(METRICS_LAG_S)
    hits, queries = (a - b for a, b in zip(prefix_counters(metrics_url)[model], before))
    ok = [o for o in outputs if o.success]
    ttft = [o.ttft * 1000 for o in ok]
    return {
        "requests": len(outputs),
        "failed": len(outputs) - len(ok),
        "prefix_cache_hit_rate": round(hits / queries, 3) if queries else None,
        "prompt_tokens_queried": int(queries),
        "ttft_ms_p50": round(float(np.percentile(ttft, 50)), 1),
        "ttft_ms_p95": round(float(np.percentile(ttft, 95)), 1),
        "latency_ms_p50": round(float(np.percentile([o.latency * 1000 for o in ok], 50)), 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.replica_router", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=3.0, help="requests/s (Poisson) to each deployment in turn")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--document-chars", type=int, default=2600, help="~650 tokens: 5 full KV blocks of 128")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/replica_router.json"))
    args = parser.parse_args(argv)
    times = arrival_times(LoadShape("constant", args.rate, args.rate, args.duration), MAX_REQUESTS, args.seed)
    messages = workload(args.documents, args.document_chars, len(times), args.seed)

    from cluster.local import LocalCluster

    results = {}
    with LocalCluster(PROFILE, observe=False) as cluster:
        metrics_url = cluster.profile.ingress.metrics_url
        for model in DEPLOYMENTS:
            results[model] = measure(cluster.base_url, metrics_url, model, messages, times, args.max_tokens)
            print(f"{model}: {json.dumps(results[model])}", flush=True)
    report = {"settings": vars(args) | {"out": str(args.out)}, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
