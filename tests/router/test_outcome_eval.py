"""`python -m router outcome-eval` on a small synthetic outcome set where each model is right on its own kind of
prompt: the heads learn who answers what, the report has LLMRouter's fields, and the cost weight buys cheap models."""

import json
import random

import pytest

from router.training.cli import main

MATH = "What is {a} plus {b}, and then multiplied by {c}? Show the arithmetic."
CODE = "Write a Python function named f{a} that returns the sum of a list after removing values above {b}."
PRICES = {"mathy": {"input_price": 0.9, "output_price": 0.9}, "cody": {"input_price": 0.9, "output_price": 0.9},
          "cheap": {"input_price": 0.1, "output_price": 0.1}}


def outcome_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 2
        prompt = (MATH if kind == 0 else CODE).format(a=rng.randint(1, 999), b=rng.randint(1, 999), c=rng.randint(2, 9))
        rows.append({"question": prompt, "scores": {"mathy": float(kind == 0), "cody": float(kind == 1), "cheap": 0.4}})
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("outcomes")
    (folder / "train.json").write_text(json.dumps(outcome_rows(160, 0)))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in outcome_rows(60, 1)))
    (folder / "models.json").write_text(json.dumps(PRICES))
    out = folder / "report.json"
    assert main(["outcome-eval", "--train", str(folder / "train.json"), "--test", str(folder / "test.jsonl"),
                 "--models", str(folder / "models.json"), "--learning-curve", "--json", "--out", str(out)]) == 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    return json.loads(out.read_text())


def test_the_report_has_llmrouters_fields_and_the_baselines(report: dict):
    assert report["n"] == 60 and report["models"] == ["mathy", "cody", "cheap"]
    assert {"routed_accuracy", "best_single", "oracle", "gap_closed", "curve"} <= set(report)
    assert set(report["baselines"]) == {"random", "best_single", "knn", "linear_probe", "heads_only"}
    assert report["train"]["knn_k"] in (5, 10, 20, 50, 100) and "blend" in report["train"]["validation"]
    assert report["train"]["n_validation"] > 0 and len(report["train"]["epochs_kept"]) == 5  # one per head


def test_training_on_a_small_sample_learns_which_model_answers_which_prompt(report: dict):
    assert report["oracle"] == 1.0 and report["best_single"] == 0.5
    assert report["routed_accuracy"] >= 0.95 and report["gap_closed"] >= 0.9
    assert report["baselines"]["random"] == pytest.approx((0.5 + 0.5 + 0.4) / 3, abs=1e-3)


def test_the_cost_weight_trades_accuracy_for_price(report: dict):
    quality_only, thriftiest = report["curve"][0], report["curve"][-1]
    assert quality_only["cost_weight"] == 0 and quality_only["mean_price"] == pytest.approx(1.8)
    assert thriftiest["mean_price"] == pytest.approx(0.2) and thriftiest["accuracy"] == pytest.approx(0.4)
    assert report["price_ratio_at_best_single_accuracy"] == pytest.approx(1.0)  # reaching 0.5 needs the dear models


def test_mixing_two_cost_weights_reaches_the_best_single_score_for_less(report: dict):
    """A 1-in-6 draw of the quality-only weight (1.0 at 1.8) beside the cheap model (0.4 at 0.2) averages 0.5 at 0.47."""
    assert report["price_ratio_mixing_two_cost_weights"] <= (0.2 + 1.6 / 6) / 1.8 + 1e-3


def test_the_operating_point_is_chosen_out_of_fold_on_the_training_prompts_and_read_on_the_test_rows(report: dict):
    chosen = report["operating_point"]
    assert chosen["out_of_fold"]["accuracy"] >= chosen["out_of_fold"]["best_single"] == 0.5
    on_curve = next(p for p in report["curve"] if p["cost_weight"] == chosen["cost_weight"])
    assert chosen["test"] == {"accuracy": on_curve["accuracy"], "price_ratio": round(on_curve["mean_price"] / 1.8, 4)}
    assert chosen["test"]["accuracy"] >= 0.5  # the synthetic split is clean enough that validation's pick holds


def test_the_learning_curve_refits_on_growing_shares_and_ends_at_the_reported_router(report: dict):
    curve = report["learning_curve"]
    assert [p["share"] for p in curve["points"]] == [0.125, 0.25, 0.5, 1.0]
    assert [p["n_fit"] for p in curve["points"]] == sorted(p["n_fit"] for p in curve["points"])
    assert curve["points"][-1]["routed_accuracy"] == report["routed_accuracy"]  # all the fit rows: the same heads
    assert curve["points"][-1]["gap_closed"] == report["gap_closed"]
