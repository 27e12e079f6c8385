"""Benchmark: how far the online quality monitor's judge agrees with the real graders. Prints numbers; not a test.

The answers are the ensemble benchmark's pinned ones (`python -m cluster.bench.ensemble --methods pinned`): each
specialist's answer to a committed GSM8K / code / MMLU item, graded by the sandboxed graders (router/training/graders).
Each is put to the profile's judge through the running router exactly as serve/quality.py does (the same verdict
prompt, one token, P(Yes) from the top logprobs), and the verdicts are compared with the grades: AUC (how well P(Yes)
ranks right above wrong answers, whatever the threshold), and agreement and Cohen's kappa at a threshold. The
threshold that agrees best on the dev split is the calibration to put in the profile's `judge_correct_at`; the test
split is reported at that threshold and at the profile's current one. Resumable: each verdict is stored.

    python -m cluster.bench.ensemble --profile local --methods pinned --max-minutes 30   # answers (also issue 24's data)
    python -m cluster.bench.judge --profile local                                        # verdicts + report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from cluster.bench.ensemble import ITEMS_PATH, load_items, read_store, request_body
from router.catalog import default_cache_dir, load_profile
from router.ensemble.judging import verdict_call, yes_probability
from router.training import data
from serve.ensemble import call_body


def verdict(base_url: str, judge: str, messages: list[dict], answer: str) -> float:
    """The judge's P(Yes), asked through the router as the quality monitor asks it."""
    body = {**call_body(verdict_call(judge, messages, answer)), "router": {"cache": False}}
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=600)
    response.raise_for_status()
    content = response.json()["choices"][0]["logprobs"]["content"]
    return yes_probability({t["token"]: t["logprob"] for t in content[0]["top_logprobs"]} if content else None)


def auc(scores: list[float], truth: list[bool]) -> float | None:
    """P(a right answer scores above a wrong one), ties half: how well the score ranks, whatever the threshold."""
    right = [s for s, t in zip(scores, truth) if t]
    wrong = [s for s, t in zip(scores, truth) if not t]
    if not right or not wrong:
        return None
    pairs = [(r > w) + 0.5 * (r == w) for r in right for w in wrong]
    return round(float(np.mean(pairs)), 4)


def agreement(rows: list[dict], threshold: float) -> dict:
    """Accuracy and Cohen's kappa of `score >= threshold` against the grades, the grades' base rate, and AUC."""
    truth = [r["correct"] for r in rows]
    said = [r["score"] >= threshold for r in rows]
    n = len(rows)
    if not n:
        return {"n": 0}
    agree = sum(a == b for a, b in zip(said, truth)) / n
    p_yes, p_right = sum(said) / n, sum(truth) / n
    chance = p_yes * p_right + (1 - p_yes) * (1 - p_right)
    kappa = (agree - chance) / (1 - chance) if chance < 1 else None
    return {"n": n, "graded_right": round(p_right, 4), "judged_right": round(p_yes, 4), "agreement": round(agree, 4),
            "kappa": None if kappa is None else round(kappa, 4), "auc": auc([r["score"] for r in rows], truth),
            "mean_score_right": _mean([r["score"] for r in rows if r["correct"]]),
            "mean_score_wrong": _mean([r["score"] for r in rows if not r["correct"]])}


def calibrate(rows: list[dict]) -> float:
    """The threshold (a midpoint between observed scores) with the best agreement on `rows`; ties go to the lower."""
    scores = sorted({r["score"] for r in rows})
    candidates = [0.0, *((a + b) / 2 for a, b in zip(scores, scores[1:])), 1.0]
    return round(max(candidates, key=lambda t: (agreement(rows, t)["agreement"], -t)), 4)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def write_plot(rows: list[dict], judge: str, threshold: float, path: Path) -> None:
    """The judge's P(Yes) for answers the graders found right and wrong: the further apart, the better it ranks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 21)
    for right, label in ((True, "graded right"), (False, "graded wrong")):
        ax.hist([r["score"] for r in rows if r["correct"] == right], bins=bins, alpha=0.6, label=label)
    ax.axvline(threshold, color="grey", linestyle="--", label=f"calibrated threshold {threshold:g}")
    ax.set(xlabel=f"P(Yes) from {judge}", ylabel="answers", title="The quality monitor's judge against the graders")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def summarise(rows: list[dict], profile: str, judge: str, configured: float) -> dict:
    """Calibrated on dev, reported on test (by model and kind too), and the test split at the configured threshold."""
    dev, test = [r for r in rows if r["split"] == "dev"], [r for r in rows if r["split"] == "test"]
    threshold = calibrate(dev) if dev else configured
    return {"profile": profile, "judge": judge, "configured_threshold": configured, "calibrated_threshold": threshold,
            "dev_at_calibrated": agreement(dev, threshold), "test_at_calibrated": agreement(test, threshold),
            "test_at_configured": agreement(test, configured),
            "test_by_model": {m: agreement([r for r in test if r["method"] == m], threshold)
                              for m in sorted({r["method"] for r in test})},
            "test_by_kind": {k: agreement([r for r in test if r["kind"] == k], threshold)
                             for k in sorted({r["kind"] for r in test})}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.judge", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="local")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--answers", type=Path,
                        help="the ensemble benchmark's store (default .cache/bench/ensemble/<profile>.jsonl)")
    parser.add_argument("--store", type=Path, help="verdicts JSONL (default .cache/bench/judge/<profile>.jsonl)")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks/judge.json"))
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    judge = profile.observability.judge
    if judge is None:
        sys.exit(f"profile {args.profile} has no observability.judge")
    answers = read_store(args.answers or default_cache_dir() / "bench" / "ensemble" / f"{args.profile}.jsonl")
    store = args.store or default_cache_dir() / "bench" / "judge" / f"{args.profile}.jsonl"
    judged = read_store(store)
    items = {item.id: item for rows in load_items(ITEMS_PATH, data.load()).values() for item in rows}
    todo = [r for key, r in answers.items() if r["method"].startswith("pinned:") and r["status"] == "ok" and key not in judged]
    store.parent.mkdir(parents=True, exist_ok=True)
    for r in tqdm(todo, desc="judge bench", file=sys.stderr):
        messages = request_body(items[r["item"]], r["method"])["messages"]
        row = {"split": r["split"], "item": r["item"], "method": r["method"], "kind": r["kind"], "correct": r["correct"],
               "score": round(verdict(args.base_url, judge, messages, r["text"]), 4)}
        with store.open("a") as f:
            f.write(json.dumps(row) + "\n")
        judged[(row["split"], row["item"], row["method"])] = row
    report = summarise(list(judged.values()), args.profile, judge, profile.observability.judge_correct_at)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    write_plot([r for r in judged.values() if r["split"] == "test"], judge, report["calibrated_threshold"],
               args.output.with_suffix(".png"))
    print(json.dumps({k: report[k] for k in ("calibrated_threshold", "test_at_calibrated", "test_at_configured")}))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
