"""The `auto` policy's cost-quality curve on a graded quality matrix (`python -m router label`): sweep the cost
weight, let the router's own `rank` pick one specialist per prompt, and read accuracy off the matrix.

Two scorers feed `rank`: the deployed checkpoint (its role prior, as `model: auto` runs today) and a quality head
fitted on the matrix itself, cross-fitted (k folds: each prompt is scored by a head that never saw it). Costs are
the profile's prices, normalised to the most expensive specialist (as the policy sees them). Baselines: every
single specialist, and the random router that mixes the cheapest and the most accurate one.

APGR generalises RouteLLM's metric to many models: weak = the cheapest specialist, strong = the most accurate one;
PGR(c) = (accuracy reachable at mean cost c - weak) / (strong - weak) on 101 cost budgets from weak's cost to
strong's, where reachable means on the upper hull of the sweep's points (mixing two cost weights at random per
request reaches any point between them); APGR = its mean. Random mixing scores 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from router.catalog import Profile, load_profile
from router.encoder import MiniLMEncoder
from router.policy import Weights, normalised_costs, rank
from router.routing import Router
from router.training.outcomes import read_outcomes
from router.training.train import FitConfig, fit_head

COST_WEIGHTS = [0.0] + [round(10 ** (e / 10), 4) for e in range(-30, 21)]  # 0.001 .. 100, log-spaced
BUDGETS = [i / 100 for i in range(101)]
FOLDS = 5


def read_matrix(path: Path, names: list[str]) -> tuple[list[str], torch.Tensor]:
    """Prompts and an (n, specialists) outcome matrix, columns in `names` order (a label CSV, or any outcome file
    that grades every specialist on every prompt)."""
    outcomes = read_outcomes(path)
    missing = [n for n in names if n not in outcomes.scores]
    if missing:
        raise ValueError(f"{path}: no column for specialist(s) {missing}; label them first (python -m router label)")
    if ungraded := [n for n in names if None in outcomes.scores[n]]:
        raise ValueError(f"{path}: specialist(s) {ungraded} not graded on every prompt")
    return outcomes.prompts, torch.tensor([outcomes.scores[n] for n in names]).T


def deployed_quality(router: Router, prompts: list[str]) -> torch.Tensor:
    """(n, specialists) predicted quality as `model: auto` computes it."""
    roles, models = router.predict(prompts)
    return torch.tensor([list(router.specialist_quality(r, m).values()) for r, m in zip(roles, models)])


def crossfit_quality(prompts: list[str], outcomes: torch.Tensor, config: FitConfig, folds: int = FOLDS) -> torch.Tensor:
    """(n, specialists) predicted quality from heads fitted on the matrix, each prompt scored out of fold."""
    features = MiniLMEncoder().encode_cached(prompts)
    fold = torch.arange(len(prompts)) % folds
    fold = fold[torch.randperm(len(prompts), generator=torch.Generator().manual_seed(config.seed))]
    predicted = torch.zeros_like(outcomes)
    for k in range(folds):
        train, test = fold != k, fold == k
        head = fit_head(features[train], torch.full((int(train.sum()),), -1), outcomes[train], config)
        with torch.inference_mode():
            predicted[test] = head(features[test])[1].sigmoid()
    return predicted


def sweep(profile: Profile, quality: torch.Tensor, outcomes: torch.Tensor) -> list[dict]:
    """One (cost weight, mean normalised cost, accuracy, mix) point per cost weight, choices made by `rank`."""
    costs = torch.tensor([normalised_costs(profile)[n] for n in profile.names])
    points = []
    for weight in COST_WEIGHTS:
        weights = Weights(quality=1.0, cost=weight, latency=0.0)
        picks = [profile.names.index(rank(profile, dict(zip(profile.names, q.tolist())), weights).winner) for q in quality]
        picked = torch.tensor(picks)
        points.append({
            "cost_weight": weight,
            "cost": round(float(costs[picked].mean()), 4),
            "accuracy": round(float(outcomes[torch.arange(len(picks)), picked].mean()), 4),
            "mix": {n: picks.count(i) for i, n in enumerate(profile.names) if picks.count(i)},
        })
    return points


def frontier(points: list[dict], weak: tuple[float, float]) -> list[tuple[float, float]]:
    """Upper concave hull of (cost, accuracy) from the weak point on: any point on it is reachable by drawing one of
    two cost weights at random per request."""
    hull: list[tuple[float, float]] = []
    for cost, accuracy in sorted({weak, *((p["cost"], p["accuracy"]) for p in points)}):
        if cost < weak[0] or (hull and accuracy <= hull[-1][1]):
            continue
        while len(hull) >= 2 and (hull[-1][1] - hull[-2][1]) * (cost - hull[-2][0]) <= (accuracy - hull[-2][1]) * (hull[-1][0] - hull[-2][0]):
            hull.pop()
        hull.append((cost, accuracy))
    return hull


def apgr(points: list[dict], weak: tuple[float, float], strong: tuple[float, float]) -> float:
    """Mean over cost budgets of the accuracy reachable at that mean cost, as a fraction of weak -> strong."""
    (weak_cost, weak_acc), (strong_cost, strong_acc) = weak, strong
    hull = frontier(points, weak)
    costs, accuracies = [c for c, _ in hull], [a for _, a in hull]
    gains = []
    for b in BUDGETS:
        budget = weak_cost + b * (strong_cost - weak_cost)
        gains.append((float(np.interp(budget, costs, accuracies)) - weak_acc) / (strong_acc - weak_acc))
    return round(sum(gains) / len(gains), 4)


def cost_curve(matrix: Path, profile_name: str, config: FitConfig = FitConfig()) -> dict:
    profile = load_profile(profile_name)
    prompts, outcomes = read_matrix(matrix, profile.names)
    costs = normalised_costs(profile)
    single = {n: {"cost": round(costs[n], 4), "accuracy": round(float(outcomes[:, i].mean()), 4)} for i, n in enumerate(profile.names)}
    weak = min(single, key=lambda n: (single[n]["cost"], -single[n]["accuracy"]))
    strong = max(single, key=lambda n: (single[n]["accuracy"], -single[n]["cost"]))
    if single[strong]["accuracy"] <= single[weak]["accuracy"] or single[strong]["cost"] <= single[weak]["cost"]:
        raise ValueError(f"no cost-quality trade-off to route: the cheapest specialist ({weak}) is also the most accurate")
    ends = ((single[weak]["cost"], single[weak]["accuracy"]), (single[strong]["cost"], single[strong]["accuracy"]))
    oracle = outcomes.max(dim=1).values.mean()
    curves = {
        "auto_deployed": sweep(profile, deployed_quality(Router.from_profile(profile), prompts), outcomes),
        "auto_crossfit": sweep(profile, crossfit_quality(prompts, outcomes, config), outcomes),
    }
    return {
        "matrix": str(matrix), "profile": profile_name, "n": len(prompts), "single": single, "weak": weak, "strong": strong,
        "oracle_accuracy": round(float(oracle), 4),
        "apgr": {name: apgr(points, *ends) for name, points in curves.items()} | {"random": 0.5},
        "curves": curves, "folds": FOLDS, "seed": config.seed,
    }


def plot(report: dict, path: Path) -> None:
    """Accuracy vs mean normalised cost: both `auto` curves, random mixing, the single specialists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, points in report["curves"].items():
        ax.step([p["cost"] for p in points], [p["accuracy"] for p in points], where="post", marker=".",
                label=f"{name} (APGR {report['apgr'][name]:.2f})")
    weak, strong = report["single"][report["weak"]], report["single"][report["strong"]]
    ax.plot([weak["cost"], strong["cost"]], [weak["accuracy"], strong["accuracy"]], "--", label="random (APGR 0.50)")
    for name, point in report["single"].items():
        ax.scatter(point["cost"], point["accuracy"], color="black", zorder=3)
        ax.annotate(name, (point["cost"], point["accuracy"]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.axhline(report["oracle_accuracy"], color="grey", linewidth=0.8, label="oracle")
    ax.set_xlabel("mean cost per request (normalised to the dearest specialist)")
    ax.set_ylabel("accuracy on graded items")
    ax.set_title(f"{report['profile']} specialists, {report['n']} graded items")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
