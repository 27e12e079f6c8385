"""Benchmark: what scoring the shipped scorer's int8 encoder one prompt per call costs, and what batching it would
change. Prints numbers; not a test.

onnxruntime's dynamic int8 quantisation takes one activation scale per call, over every prompt and padding position in
it, so a batched prompt's vector depends on its batch-mates. The encoder therefore runs one prompt per call
(router/encoder.py). On the same prompts this compares that with length-sorted batches of `BATCH`, as every int8
evaluation ran before: how far the vectors and role probabilities move, how many top roles flip, and the throughput
of both, timed in alternating rounds so that a busy machine slows both alike; the same timing for cheaper int8
encoders (`--variants`), whose batched throughput docs/benchmarks/scorer.md reports.

    python -m cluster.bench.scorer_batching --out docs/benchmarks/scorer_batching.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

from router.encoder import BATCH, THREADS, MiniLMEncoder
from router.scorer import DEFAULT_CHECKPOINT, Scorer
from router.training import data
from router.training.evaluate import cost_sample

ROUNDS = 3  # alternating timing rounds per way of calling


def batched_twin(encoder: MiniLMEncoder) -> MiniLMEncoder:
    """The same graph, called as every int8 encoder was before: length-sorted batches of BATCH prompts."""
    twin = copy.copy(encoder)
    twin.per_call = BATCH
    return twin


def compare(scorer: Scorer, texts: list[str]) -> dict:
    """How batching moves each prompt's vector and role probabilities away from the one-per-call ones serving uses."""
    alone, together = scorer.encoder.encode(texts), batched_twin(scorer.encoder).encode(texts)
    cosine = (alone * together).sum(1)
    probs_alone, probs_together = scorer.predict_vectors(alone)[0], scorer.predict_vectors(together)[0]
    shift = (probs_alone - probs_together).abs().max(1).values
    return {"n": len(texts), "cosine_min": round(cosine.min().item(), 5), "cosine_mean": round(cosine.mean().item(), 5),
            "role_prob_shift_max": round(shift.max().item(), 4), "role_prob_shift_mean": round(shift.mean().item(), 5),
            "top_role_flips": int((probs_alone.argmax(1) != probs_together.argmax(1)).sum())}


def throughput(encoder: MiniLMEncoder, texts: list[str]) -> dict:
    """Prompts/s of `encode` over all `texts`, one per call vs batches of BATCH, rounds alternating."""
    seconds = {"one_per_call": [], f"batches_of_{BATCH}": []}
    for _ in range(ROUNDS):
        for name, way in (("one_per_call", encoder), (f"batches_of_{BATCH}", batched_twin(encoder))):
            start = time.perf_counter()
            way.encode(texts)
            seconds[name].append(time.perf_counter() - start)
    rates = {name: round(len(texts) / min(times), 1) for name, times in seconds.items()}
    return {"prompts_per_s": rates, "ratio": round(rates["one_per_call"] / rates[f"batches_of_{BATCH}"], 3),
            "rounds": ROUNDS, "threads": THREADS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--probe", type=Path, default=Path("docs/router/everyday_questions.jsonl"),
                        help="a prompt file (JSONL with `prompt`) compared beside the dataset sample")
    parser.add_argument("--variants", default="2:32", help="comma-separated layers:tokens of plain int8 encoders "
                        "(docs/benchmarks/scorer.md) whose throughput is also timed both ways; '' for none")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    scorer = Scorer.load(args.checkpoint)
    if not scorer.encoder.quantized:
        raise SystemExit(f"{args.checkpoint}: its encoder is fp32, which batches without changing a vector")
    variants = [MiniLMEncoder(int(tokens), int(layers), quantized=True)
                for layers, tokens in (v.split(":") for v in args.variants.split(",") if v)]
    sample = cost_sample(data.load())
    load_before = os.getloadavg()[0]
    report = {"checkpoint": str(args.checkpoint), "scorer": scorer.name, "encoder": scorer.encoder.info["features"],
              "batch": BATCH,
              "probe": {"file": str(args.probe), **compare(scorer, [r["prompt"] for r in data.read_prompt_file(args.probe)])},
              "dataset_sample": compare(scorer, sample),
              "throughput": throughput(scorer.encoder, sample),
              "variants_throughput": {f"{e.info['features']}-{e.max_tokens}-tokens": throughput(e, sample) for e in variants},
              "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
