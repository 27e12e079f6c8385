"""Benchmark: what a cheaper router encoder saves in scoring cost and loses in routing accuracy. Prints numbers;
not a test.

A variant is `layers:tokens:weights[:distilled|finetuned]` -- the first `layers` of MiniLM's 6 transformer layers,
a window of the first `tokens` WordPiece tokens, fp32 or int8 (onnxruntime dynamic quantisation) weights;
`distilled` trains those layers to reproduce the full encoder's embeddings first, `finetuned` trains them on the
role labels first (`router.training.encoder_finetune`; leave-sources-out, each held-out fold is embedded by a student that never
saw its prompts, as `router eval --loso --student | --finetune`). For each one it runs
the same leave-sources-out evaluation as `python -m router eval --loso` (same folds, head ensemble and kNN vote),
then fits that scorer on all the data and times it as the router runs it (`router.training.evaluate.scoring_cost` on
the fixed 2,048-prompt sample: single prompts, then batches of 256). `6:128:fp32` is the deployed encoder.

    python -m cluster.bench.scorer --json --out docs/benchmarks/scorer_variants.json
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from router.training import data
from router.training.encoder_finetune import DistillConfig, FinetuneConfig, held_out_students
from router.encoder import MiniLMEncoder
from router.training.evaluate import cost_sample, leave_sources_out, scoring_cost
from router.scorer import Scorer, reference_set
from router.training.train import fit_head, role_targets

VARIANTS = ("6:128:fp32", "6:128:int8", "6:64:fp32", "3:64:int8", "3:32:int8", "2:32:int8", "2:32:int8:distilled",
            "2:48:int8:distilled")
FOLDS = 10  # source-disjoint groups, as `router eval --loso --folds 10` (the tables in docs/ were made this way)
THREADS = 2  # the machine's cores, as `python -m router` runs


def encoders_of(variant: str, items: list[dict]) -> Callable[[set[str]], MiniLMEncoder]:
    """`layers:tokens:fp32|int8[:distilled|finetuned]` -> the encoder for each fold's held-out sources (ONNX graphs
    built on first use)."""
    layers, tokens, weights, *trained = variant.split(":")
    if weights not in ("fp32", "int8") or trained not in ([], ["distilled"], ["finetuned"]):
        raise SystemExit(f"{variant}: expected layers:tokens:fp32|int8[:distilled|finetuned]")
    if trained:
        kind = FinetuneConfig if trained == ["finetuned"] else DistillConfig
        return held_out_students(items, kind(layers=int(layers), tokens=int(tokens), quantized=weights == "int8"))
    encoder = MiniLMEncoder(max_tokens=int(tokens), layers=int(layers), quantized=weights == "int8")
    return lambda held_out: encoder


def measure(variant: str, items: list[dict]) -> dict:
    """Leave-sources-out hit rates and the scoring cost of the scorer built on one encoder variant (for a
    distilled or fine-tuned one, the cost is timed on one of its students: every student has the same shape)."""
    encoder_for = encoders_of(variant, items)
    encoder = encoder_for({items[0]["source"]})
    loso = leave_sources_out(items, folds=FOLDS, encoder_for=encoder_for)
    features = encoder.encode_cached([i["prompt"] for i in items])
    roles = role_targets([i["domain"] for i in items])
    head = fit_head(features, roles, groups=[i["source"] for i in items])
    scorer = Scorer(encoder, head, [], {"version": variant}, reference_set(features, roles))
    cost = scoring_cost(scorer, cost_sample(items))
    return {"variant": variant, "loso_top1": loso["top1"], "loso_per_domain": loso["per_domain"],
            "knn_baseline_top1": loso["knn"]["top1"], **cost}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated layers:tokens:fp32|int8[:distilled|finetuned]")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    items = data.load()
    load_before = os.getloadavg()[0]
    rows = [measure(variant, items) for variant in args.variants.split(",")]
    report = {"n": len(items), "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
              "variants": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report))
        return
    print(f"{'variant':<20} {'LOSO top-1':>10} {'p50 single':>11} {'batched':>12}")
    for row in rows:
        print(f"{row['variant']:<20} {row['loso_top1']:>10.1%} {row['latency_ms_p50_single']:>8.2f} ms "
              f"{row['throughput_qps_batched']:>6.0f} /s")


if __name__ == "__main__":
    main()
