"""Benchmark: what the router's metrics and decision log cost. Prints numbers; not a test.

In one run, against a running local cluster: two router applications are deployed beside the served one, routing to
its engines, `/observed` (metrics and decision log on) and `/unobserved` (both off); neither runs the quality monitor,
whose cost is its sample rate of extra judge calls. They take turns (A/B, then B/A) in blocks of closed-loop requests
with one output token each, so the router path, not the engines, sets the pace. Two costs per round: throughput,
1 - observed / unobserved requests/s, and the router replica's CPU time per request (its process's user + system
time over the block), observed / unobserved - 1, which the other jobs of a shared machine disturb far less. The
report gives the median over rounds and a bootstrap interval of each.

    python -m cluster.local --profile tiny &   # or any running profile
    python -m cluster.bench.metrics_overhead --profile tiny --models auto tiny-coder --rounds 12 --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

from cluster.bench.router_overhead import PROMPTS, chat_body, run_closed_loop
from cluster.local import DASHBOARD_PORT, HOST
from router.catalog import default_cache_dir

VARIANTS = {"observed": {"judge_sample_rate": 0},
            "unobserved": {"metrics": False, "decision_log": False, "judge_sample_rate": 0}}
BOOTSTRAP = 2000


def deploy(served: dict, with_variants: bool) -> None:
    """`serve deploy` the served config unchanged (its engines keep running), alone or with the two routers compared."""
    config = json.loads(json.dumps(served))
    if with_variants:
        app = config["applications"][0]
        config["applications"] += [{**app, "name": name, "route_prefix": f"/{name}",
                                    "args": {**app["args"], "observability": overrides, "engines_of": app["name"]}}
                                   for name, overrides in VARIANTS.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(config, f)
        f.flush()
        subprocess.run([str(Path(sys.executable).parent / "serve"), "deploy", f.name, "--address",
                        f"http://{HOST}:{DASHBOARD_PORT}"], check=True, capture_output=True, timeout=300)


def wait_healthy(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not healthy after {timeout_s:.0f} s")
        time.sleep(2)


def router_process(app: str) -> psutil.Process:
    """The application's router replica (one per variant), by the process title Ray gives it."""
    title = f"ServeReplica:{app}:router"
    found = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and p.info["cmdline"][0].endswith(title)]
    if len(found) != 1:
        raise RuntimeError(f"expected one router replica of {app!r}, found {len(found)}")
    return found[0]


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def block(client: httpx.AsyncClient, app: str, model: str, args: argparse.Namespace) -> tuple[float, float]:
    """One closed-loop block: (requests per second, the router replica's CPU milliseconds per request)."""
    async def call(prompt: str) -> tuple[int, str]:
        response = await client.post(f"/{app}/v1/chat/completions", json=chat_body(model, prompt, args.max_tokens))
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"], model

    router, cpu_before = router_process(app), cpu_s(router_process(app))
    latencies, _, seconds, _ = await run_closed_loop(call, args.requests, args.concurrency)
    return len(latencies) / seconds, (cpu_s(router) - cpu_before) * 1000 / len(latencies)


def bootstrap_ci(costs: list[float], seed: int = 0) -> list[float]:
    """95 % interval of the median cost, resampling rounds."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(costs, k=len(costs))) for _ in range(BOOTSTRAP))
    return [round(medians[int(0.025 * BOOTSTRAP)], 4), round(medians[int(0.975 * BOOTSTRAP)], 4)]


async def compare(base_url: str, model: str, args: argparse.Namespace) -> dict:
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        for name in VARIANTS:  # warm both paths (first requests compile and fill caches)
            for prompt in PROMPTS:
                (await client.post(f"/{name}/v1/chat/completions", json=chat_body(model, prompt, 1))).raise_for_status()
        for round_ in range(args.rounds):
            for name in list(VARIANTS) if round_ % 2 == 0 else list(VARIANTS)[::-1]:
                runs[name].append(await block(client, name, model, args))
            (o_rps, o_cpu), (u_rps, u_cpu) = runs["observed"][-1], runs["unobserved"][-1]
            print(f"{model} round {round_ + 1}: observed {o_rps:.1f} req/s {o_cpu:.2f} cpu-ms/req, "
                  f"unobserved {u_rps:.1f} req/s {u_cpu:.2f} cpu-ms/req", flush=True)
    pairs = list(zip(runs["observed"], runs["unobserved"]))
    throughput_costs = [1 - o[0] / u[0] for o, u in pairs]
    cpu_costs = [o[1] / u[1] - 1 for o, u in pairs]
    return {"model": model, "observed": [[round(r, 2), round(c, 3)] for r, c in runs["observed"]],
            "unobserved": [[round(r, 2), round(c, 3)] for r, c in runs["unobserved"]],
            "throughput_cost_median": round(statistics.median(throughput_costs), 4),
            "throughput_cost_ci95": bootstrap_ci(throughput_costs),
            "cpu_cost_median": round(statistics.median(cpu_costs), 4), "cpu_cost_ci95": bootstrap_ci(cpu_costs),
            "met": statistics.median(throughput_costs) <= args.goal}


def write_plot(results: list[dict], path: Path) -> None:
    """Per round, each variant's throughput and router CPU per request, one column per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 7), squeeze=False)
    for column, r in enumerate(results):
        for row, (key, unit) in enumerate((("req/s", "requests/s"), ("cpu", "router CPU ms / request"))):
            ax = axes[row][column]
            for variant in VARIANTS:
                ax.plot(range(1, len(r[variant]) + 1), [v[row] for v in r[variant]], marker="o", label=variant)
            ax.set(title=f"{r['model']}: {unit}", xlabel="round")
            ax.legend()
    fig.suptitle("Metrics + decision log on (observed) vs off (unobserved), same engines, alternating blocks")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.metrics_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", help="the profile the running cluster serves")
    parser.add_argument("--config", type=Path, help="the Serve config it was deployed with (default: the one "
                        "`python -m cluster.local` wrote, .cache/serve-<profile>.yaml)")
    parser.add_argument("--models", nargs="+", default=["auto"], help="`auto` (scorer + policy) and/or pinned specialists")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=400, help="requests per block (shorter blocks are mostly noise here)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=1)
    parser.add_argument("--goal", type=float, default=0.02, help="the most throughput observability may cost")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks/metrics_overhead.json"))
    args = parser.parse_args(argv)
    served = yaml.safe_load((args.config or default_cache_dir() / f"serve-{args.profile}.yaml").read_text())
    base_url = f"http://{HOST}:{served['http_options']['port']}"
    deploy(served, True)
    try:
        for name in VARIANTS:
            wait_healthy(f"{base_url}/{name}")
        results = [asyncio.run(compare(base_url, model, args)) for model in args.models]
    finally:
        deploy(served, False)  # the served application alone again
    settings = {k: getattr(args, k) for k in ("profile", "rounds", "requests", "concurrency", "max_tokens", "goal")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    write_plot(results, args.output.with_suffix(".png"))
    for r in results:
        (t_lo, t_hi), (c_lo, c_hi) = r["throughput_cost_ci95"], r["cpu_cost_ci95"]
        print(f"{r['model']}: metrics + decision log cost {r['throughput_cost_median']:.1%} of throughput (95 % CI {t_lo:.1%} "
              f"to {t_hi:.1%}) and {r['cpu_cost_median']:.1%} more router CPU per request ({c_lo:.1%} to {c_hi:.1%}); "
              f"goal <= {args.goal:.0%} of throughput: {'met' if r['met'] else 'NOT met'}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
