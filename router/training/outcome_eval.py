"""`python -m router outcome-eval`: how well the router, trained on an operator's outcome file, picks among their models
on another file, in LLMRouter's terms, with a cost-quality curve and the usual baselines beside it.

routed_accuracy: the mean test score of the model the scorer rates highest (cost weight 0); best_single: the model
best on the training file, scored on the test file; oracle: the best model per prompt; gap_closed = (routed -
best_single) / (oracle - best_single). Baselines on the same MiniLM embeddings: random (the expected score of a
uniform pick), kNN (mean score of the k nearest training prompts), a linear probe (ridge), and the heads alone.

The scorer is fitted as `train` fits it: on the training file minus a seeded validation part, where each head stops at
its lowest outcome loss (early stopping) and each model's head is calibrated (Platt scaling) so that predicted quality
trades against price in the units the cost weight assumes; the same part tunes the kNN's k and the ridge's alpha, and
quality is the mean of the three (router/scorer.py `OutcomeBlend`). Prices: a model's input + output price (as the
policy adds them, normalised to the dearest), from a `models.json` like LLMRouter's; without one every model costs
the same. Where the curve reaches the best single model's score, as a share of its price, is read three ways: at a
point of the sweep, between points (two cost weights mixed at random per request), and at the one cost weight chosen
out of fold on the training prompts (the operating point an operator would deploy, read once on the test rows)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from router.encoder import MiniLMEncoder
from router.training.cost_curve import COST_WEIGHTS, frontier
from router.scorer import OutcomeBlend, knn_outcomes, ridge_outcomes
from router.training.train import (VALIDATION_SHARE, FitConfig, fit_calibration, fit_head, fit_outcome_blend,
                                   outcome_matrix, routed_score, split_rows)

MAX_EPOCHS = 20  # early stopping picks fewer
OPERATING_FOLDS = 5  # the operating point's cost weight is chosen on every training prompt, each scored out of fold
CURVE_SHARES = (0.125, 0.25, 0.5, 1.0)


def read_prices(path: Path | None, models: list[str]) -> dict[str, float]:
    """Input + output price per model from a models.json (`{model: {"input_price", "output_price"}}`), or 1 each."""
    if path is None:
        return dict.fromkeys(models, 1.0)
    listed = json.loads(Path(path).read_text())
    missing = [m for m in models if m not in listed]
    if missing:
        raise ValueError(f"{path}: no price for model(s) {missing}")
    return {m: float(listed[m]["input_price"]) + float(listed[m]["output_price"]) for m in models}


def fit_quality(features: torch.Tensor, outcomes: torch.Tensor, fit: torch.Tensor, val: torch.Tensor,
                config: FitConfig) -> tuple[dict, Callable, OutcomeBlend]:
    """The scorer's quality as `train` fits it: heads on the `fit` rows, early-stopped and calibrated on the `val`
    rows, blended with kNN and ridge; returns what was chosen, features -> the heads' part, and the blend."""
    no_roles = torch.full((len(fit),), -1)
    head = fit_head(features[fit], no_roles, outcomes[fit], replace(config, epochs=MAX_EPOCHS),
                    validation=(features[val], outcomes[val]))
    calibration = fit_calibration(head, features[val], outcomes[val])
    blend, blend_choice = fit_outcome_blend(head, calibration, features, outcomes, fit, val)

    def heads(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return calibration.apply(head(x)[1]).sigmoid()

    choice = {"n_fit": len(fit), "n_validation": len(val), "epochs_kept": head.epochs_kept, **blend_choice}
    return choice, heads, blend


def out_of_fold_quality(features: torch.Tensor, outcomes: torch.Tensor, config: FitConfig,
                        folds: int = OPERATING_FOLDS) -> torch.Tensor:
    """Every training row's quality from a router fitted (as `fit_quality`) on the other folds: a cost weight chosen on
    these matches the best single model on all the training prompts, not on the validation part's few hundred, where
    the flat top of the curve leaves the crossing to chance."""
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(config.seed + 2))
    quality = torch.empty(outcomes.shape)
    for held in order.tensor_split(folds):
        rest = order[~torch.isin(order, held)]
        kept, val = split_rows(len(rest), VALIDATION_SHARE, config.seed)
        _, heads, blend = fit_quality(features, outcomes, rest[kept], rest[val], config)
        quality[held] = blend.apply(features[held], heads(features[held]))
    return quality


def gap_closed(routed: float, best_single: float, oracle: float) -> float | None:
    """(routed - best_single) / (oracle - best_single); None when no model beats the best single one anywhere."""
    return round((routed - best_single) / (oracle - best_single), 4) if oracle > best_single else None


def learning_curve(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   fit: torch.Tensor, val: torch.Tensor, k: int, config: FitConfig, best_single: float,
                   oracle: float) -> dict:
    """Routed accuracy and gap closed when the heads (and kNN) learn from shares of the fit rows, with the validation
    part and test rows fixed; the log-linear trend says how many times the data a third of the gap would take."""
    points = []
    for share in CURVE_SHARES:
        rows = fit[: round(len(fit) * share)]  # `fit` is a seeded permutation: its prefixes are random subsets
        _, heads, blend = fit_quality(train_x, train_y, rows, val, config)
        routed = routed_score(blend.apply(test_x, heads(test_x)), test_y)
        points.append({"share": share, "n_fit": len(rows), "routed_accuracy": round(routed, 4),
                       "gap_closed": gap_closed(routed, best_single, oracle),
                       "knn": round(routed_score(knn_outcomes(train_x[rows], train_y[rows], test_x, k), test_y), 4)})
    doublings = torch.tensor([math.log2(p["n_fit"]) for p in points], dtype=torch.double)
    gaps = torch.tensor([p["gap_closed"] for p in points], dtype=torch.double)
    slope = float(((doublings - doublings.mean()) * (gaps - gaps.mean())).sum() / ((doublings - doublings.mean()) ** 2).sum())
    more = (1 / 3 - points[-1]["gap_closed"]) / slope if slope > 0 else None
    return {"points": points, "gap_closed_per_doubling": round(slope, 4),
            "data_for_a_third_of_the_gap": f"{2 ** more:.3g}x the fit rows" if more is not None else "not on this trend"}


def sweep(quality: torch.Tensor, outcomes: torch.Tensor, prices: torch.Tensor) -> list[dict]:
    """Accuracy and mean price per prompt at each cost weight: the pick maximises quality - weight x price / max."""
    relative = prices / prices.max()
    points = []
    for weight in COST_WEIGHTS:
        pick = (quality - weight * relative).argmax(1, keepdim=True)
        points.append({"cost_weight": weight, "accuracy": round(float(outcomes.gather(1, pick).mean()), 4),
                       "mean_price": round(float(prices[pick].mean()), 4)})
    return points


def price_ratio_at(points: list[dict], accuracy: float, price: float) -> float | None:
    """The cheapest curve point reaching `accuracy`, as a share of `price`; None if no point reaches it."""
    reached = [p["mean_price"] for p in points if p["accuracy"] >= accuracy]
    return round(min(reached) / price, 4) if reached else None


def mixed_price_ratio_at(points: list[dict], accuracy: float, price: float) -> float | None:
    """As `price_ratio_at`, between the curve's points too: drawing one of two cost weights at random per request
    reaches any point of the upper hull in expectation (`cost_curve.frontier`, as APGR reads the curve)."""
    cheapest = min(points, key=lambda p: (p["mean_price"], -p["accuracy"]))
    hull = frontier([{"cost": p["mean_price"], "accuracy": p["accuracy"]} for p in points],
                    (cheapest["mean_price"], cheapest["accuracy"]))
    costs, accuracies = [c for c, _ in hull], [a for _, a in hull]
    return round(float(np.interp(accuracy, accuracies, costs)) / price, 4) if accuracy <= accuracies[-1] else None


def operating_point(out_of_fold_curve: list[dict], out_of_fold_best_single: float, test_curve: list[dict],
                    price: float) -> dict | None:
    """The cost weight an operator would deploy, chosen without the test rows: the cheapest whose routed score out of
    fold on the training prompts matches the best single model's there; then read once on the test rows."""
    matching = [p for p in out_of_fold_curve if p["accuracy"] >= out_of_fold_best_single]
    if not matching:
        return None
    chosen = min(matching, key=lambda p: p["mean_price"])
    test = next(p for p in test_curve if p["cost_weight"] == chosen["cost_weight"])
    return {"cost_weight": chosen["cost_weight"],
            "out_of_fold": {"folds": OPERATING_FOLDS, "accuracy": chosen["accuracy"],
                            "best_single": round(out_of_fold_best_single, 4),
                            "price_ratio": round(chosen["mean_price"] / price, 4)},
            "test": {"accuracy": test["accuracy"], "price_ratio": round(test["mean_price"] / price, 4)}}


def outcome_eval(train_files: list[Path], test_files: list[Path] | None = None, models_json: Path | None = None,
                 config: FitConfig = FitConfig(), holdout: float = 0.2, with_learning_curve: bool = False) -> dict:
    """Train on `train_files`, report on `test_files`; without test files, on a seeded `holdout` share of the
    training rows that nothing else sees."""
    if not test_files and not 0 < holdout < 1:
        raise ValueError(f"--holdout {holdout}: give a share between 0 and 1, or --test files")
    train_prompts, models, train_y, _ = outcome_matrix(train_files)
    if test_files:
        test_prompts, test_models, test_y, _ = outcome_matrix(test_files)
        shared = [m for m in models if m in test_models]
        train_y, test_y = train_y[:, [models.index(m) for m in shared]], test_y[:, [test_models.index(m) for m in shared]]
        models = shared
    else:
        kept, held = split_rows(len(train_prompts), holdout, config.seed + 1)  # not the validation part's seed
        test_prompts, test_y = [train_prompts[i] for i in held.tolist()], train_y[held]
        train_prompts, train_y = [train_prompts[i] for i in kept.tolist()], train_y[kept]
    if len(models) < 2:
        raise ValueError(f"the training and test files share {len(models)} model(s) ({models}); routing needs two")
    graded = ~test_y.isnan().any(1)  # a test prompt counts only when every model was graded on it
    test_prompts, test_y = [p for p, g in zip(test_prompts, graded.tolist()) if g], test_y[graded]
    price_of = read_prices(models_json, models)
    prices = torch.tensor(list(price_of.values()))
    encoder = MiniLMEncoder()
    train_x, test_x = encoder.encode_cached(train_prompts), encoder.encode_cached(test_prompts)

    fit, val = split_rows(len(train_x), VALIDATION_SHARE, config.seed)
    choice, heads, blend = fit_quality(train_x, train_y, fit, val, config)
    heads_quality = heads(test_x)
    routed_quality = blend.apply(test_x, heads_quality)
    routed = routed_score(routed_quality, test_y)
    best = int(train_y.nanmean(0).argmax())
    best_single = float(test_y[:, best].mean())
    oracle = float(test_y.max(1).values.mean())
    curve = sweep(routed_quality, test_y, prices)
    graded_train = ~train_y.isnan().any(1)
    out_of_fold_curve = sweep(out_of_fold_quality(train_x, train_y, config)[graded_train], train_y[graded_train], prices)
    report = {
        "n": len(test_prompts), "models": models,
        "train": {"files": [str(f) for f in train_files], "n": len(train_prompts), **choice},
        "test": {"files": [str(f) for f in test_files] if test_files else f"{holdout:.0%} of the training rows, held out",
                 "ungraded_dropped": int((~graded).sum())},
        "routed_accuracy": round(routed, 4), "best_single": round(best_single, 4), "best_single_model": models[best],
        "oracle": round(oracle, 4),
        "single_accuracy": {m: round(float(v), 4) for m, v in zip(models, test_y.mean(0))},
        "gap_closed": gap_closed(routed, best_single, oracle),
        "baselines": {
            "random": round(float(test_y.mean()), 4), "best_single": round(best_single, 4),
            "knn": round(routed_score(knn_outcomes(blend.x, blend.y, test_x, blend.k), test_y), 4),  # the blend's parts
            "linear_probe": round(routed_score(ridge_outcomes(blend.ridge, test_x), test_y), 4),
            "heads_only": round(routed_score(heads_quality, test_y), 4),
        },
        "prices": price_of, "priced": models_json is not None,
        "price_ratio_at_best_single_accuracy": price_ratio_at(curve, best_single, float(prices[best])),
        "price_ratio_mixing_two_cost_weights": mixed_price_ratio_at(curve, best_single, float(prices[best])),
        "operating_point": operating_point(out_of_fold_curve, float(train_y[graded_train, best].mean()), curve,
                                           float(prices[best])),
        "curve": curve, "seed": config.seed,
    }
    if with_learning_curve and oracle > best_single:
        report["learning_curve"] = learning_curve(train_x, train_y, test_x, test_y, fit, val, blend.k, config,
                                                  best_single, oracle)
    return report


def plot(report: dict, path: Path) -> None:
    """Accuracy vs mean price per prompt: the router's sweep, each single model, the oracle and the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4))
    curve = report["curve"]
    ax.plot([p["mean_price"] for p in curve], [p["accuracy"] for p in curve], marker=".", label="router (cost weight sweep)")
    if chosen := report.get("operating_point"):
        point = next(p for p in curve if p["cost_weight"] == chosen["cost_weight"])
        ax.scatter(point["mean_price"], point["accuracy"], marker="*", s=120, color="tab:red", zorder=4,
                   label=f"cost weight {chosen['cost_weight']} (chosen out of fold on the training prompts)")
    for name, price in report["prices"].items():
        ax.scatter(price, report["single_accuracy"][name], color="black", s=12, zorder=3)
        ax.annotate(name, (price, report["single_accuracy"][name]), textcoords="offset points", xytext=(3, -8), fontsize=6)
    for name, value, style in (("oracle", report["oracle"], "-"), ("kNN", report["baselines"]["knn"], ":"),
                               ("linear probe", report["baselines"]["linear_probe"], "-.")):
        ax.axhline(value, color="grey", linestyle=style, linewidth=0.8, label=f"{name} {value:.3f}")
    ax.set_xlabel("mean price per prompt (input + output price)")
    ax.set_ylabel("mean score on the test prompts")
    ax.set_title(f"{len(report['models'])} models, {report['n']} test prompts: routed {report['routed_accuracy']:.3f}, "
                 f"best single {report['best_single']:.3f}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
