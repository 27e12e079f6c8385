"""Training: role labels as the prior and graded per-model outcomes (a prompt x model quality matrix) when
given, on one shared head; deterministic for a seed, a few seconds to minutes on 2 cores."""

from __future__ import annotations

import copy
import hashlib
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from router.catalog import ROLES
from router.training.data import DOMAIN_ROLE, load
from router.training.outcomes import read_outcomes
from router.encoder import MiniLMEncoder
from router.catalog import default_cache_dir
from router.scorer import (Calibration, HeadEnsemble, OutcomeBlend, QualityHead, Scorer, checkpoint_encoder, knn_outcomes,
                           read_checkpoint, reference_path, reference_set, ridge_outcomes, save_reference, with_bias)
from router.training.encoder_finetune import DistillConfig, describe, student_encoder


VALIDATION_SHARE = 0.15  # of the outcome rows: early stopping, calibration, the blend's k and alpha
KNN_CANDIDATES = (5, 10, 20, 50, 100, 200, 400)
RIDGE_CANDIDATES = (0.1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class FitConfig:
    hidden: int = 256
    epochs: int = 6
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0  # member m of the ensemble uses seed + m
    members: int = 5  # heads trained from different seeds, probabilities averaged (LOSO: one seed varies +-1.5 points)
    class_weight: float = 0.0  # role-loss weights = (inverse class frequency) ** this; 0 = unweighted (LOSO: 0 beats 1)
    source_balance: float = 0.5  # role-loss weight of an item = (items in its source) ** -this, so MMLU-sized
    # sources do not dominate; needs `groups` (LOSO: 0 -> 0.5 -> 1 gave 79.1 / 79.9 / 80.1 %, one seed)
    label_smoothing: float = 0.1  # on the role loss (LOSO with source_balance 0.5: 79.9 -> 81.8 %, one seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def fit_head(
    features: torch.Tensor,
    roles: torch.Tensor,
    outcomes: torch.Tensor | None = None,
    config: FitConfig = FitConfig(),
    progress: bool = False,
    groups: list[str] | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> HeadEnsemble:
    """Fit `config.members` heads: label-smoothed (optionally class- and source-weighted) cross-entropy on rows
    with a role (>= 0) + BCE on observed (non-NaN) outcomes. `groups`: each row's source, for source balancing.
    `validation` (features, outcomes): each head keeps the epoch with the lowest outcome loss there (early stopping);
    the epochs kept are the ensemble's `epochs_kept`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: one thread is ~30x faster than two when other jobs share the cores
    try:
        weights = role_weights(roles, groups, config)
        fitted = [_fit_head(features, roles, outcomes, weights, replace(config, seed=config.seed + m), progress, validation)
                  for m in range(config.members)]
        ensemble = HeadEnsemble([head for head, _ in fitted])
        ensemble.epochs_kept = [epochs for _, epochs in fitted]
        return ensemble
    finally:
        torch.set_num_threads(threads)


def role_weights(roles: torch.Tensor, groups: list[str] | None, config: FitConfig) -> torch.Tensor:
    """Per-row role-loss weights, mean 1 over the rows with a role: class weights x source balance."""
    has_role = roles >= 0
    counts = torch.bincount(roles[has_role], minlength=len(ROLES)).float()
    class_weight = (counts.sum() / (len(ROLES) * counts.clamp(min=1))) ** config.class_weight
    weights = torch.where(has_role, class_weight[roles.clamp(min=0)], torch.zeros(()))
    if groups is not None and config.source_balance:
        sizes = Counter(groups)
        weights = weights * torch.tensor([float(sizes[g]) ** -config.source_balance for g in groups])
    return weights / weights[has_role].mean() if has_role.any() else weights


def outcome_loss(head: nn.Module, features: torch.Tensor, outcomes: torch.Tensor) -> float:
    """BCE of the head's per-model predictions on the observed outcomes."""
    with torch.no_grad():
        logits = head(features)[1]
    observed = ~outcomes.isnan()
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits[observed], outcomes[observed]))


def _fit_head(features, roles, outcomes, weights, config, progress, validation) -> tuple[QualityHead, int]:
    seed_everything(config.seed)
    n = features.shape[0]
    outcomes = outcomes if outcomes is not None else torch.full((n, 0), math.nan)
    head = QualityHead(features.shape[1], config.hidden, outcomes.shape[1])
    has_role = roles >= 0
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = tqdm(range(config.epochs), desc=f"train (seed {config.seed})", disable=not progress)
    best = (math.inf, config.epochs, None)  # (validation loss, epochs, weights)
    head.train()
    for epoch in steps:
        for idx in torch.randperm(n).split(config.batch_size):
            role_logits, model_logits = head(features[idx])
            loss = torch.zeros(())
            mask = has_role[idx]
            if mask.any():
                role_loss = torch.nn.functional.cross_entropy(role_logits[mask], roles[idx][mask], reduction="none",
                                                              label_smoothing=config.label_smoothing)
                loss = loss + (role_loss * weights[idx][mask]).mean()
            observed = ~outcomes[idx].isnan()
            if observed.any():
                loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
                    model_logits[observed], outcomes[idx][observed]
                )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        steps.set_postfix(loss=f"{loss.item():.3f}")
        if validation is not None:
            head.eval()
            if (val_loss := outcome_loss(head, *validation)) < best[0]:
                best = (val_loss, epoch + 1, copy.deepcopy(head.state_dict()))
            head.train()
    head.eval()
    if best[2] is not None:
        head.load_state_dict(best[2])
    return head, best[1]


def fit_calibration(head: nn.Module, features: torch.Tensor, outcomes: torch.Tensor, steps: int = 200) -> Calibration:
    """Per-model Platt scaling: the scale and shift of the head's logits that minimise cross-entropy on the observed
    validation outcomes, so a predicted quality is a probability the cost weight can trade against price."""
    with torch.no_grad():
        logits = head(features)[1]
    scale, shift = torch.ones(logits.shape[1], requires_grad=True), torch.zeros(logits.shape[1], requires_grad=True)
    observed = ~outcomes.isnan()
    optimiser = torch.optim.LBFGS([scale, shift], max_iter=steps)

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits((logits * scale + shift)[observed], outcomes[observed])
        value.backward()
        return value

    optimiser.step(loss)
    return Calibration(scale.detach(), shift.detach())


def routed_score(quality: torch.Tensor, outcomes: torch.Tensor) -> float:
    """Mean outcome of the model with the highest predicted quality on each row."""
    return float(outcomes.gather(1, quality.argmax(1, keepdim=True)).mean())


def fit_ridge(features: torch.Tensor, outcomes: torch.Tensor, alpha: float) -> torch.Tensor:
    """Closed-form ridge per model (with a bias) on that model's graded rows: (feature_dim + 1, models) weights."""
    columns = []
    for j in range(outcomes.shape[1]):
        seen = ~outcomes[:, j].isnan()
        a, y = with_bias(features[seen]), outcomes[seen, j].double()
        columns.append(torch.linalg.solve(a.T @ a + alpha * torch.eye(a.shape[1], dtype=torch.double), a.T @ y))
    return torch.stack(columns, 1).float()


def fit_outcome_blend(head: nn.Module, calibration: Calibration, features: torch.Tensor, outcomes: torch.Tensor,
                      fit: torch.Tensor, val: torch.Tensor) -> tuple[OutcomeBlend, dict]:
    """The kNN's k and the ridge's alpha that route best on the validation rows (fitted on the `fit` rows), then both
    refitted on the fit and validation rows together; returns the blend and the validation scores behind each choice."""
    graded = val[~outcomes[val].isnan().any(1)]
    x, y = features[graded], outcomes[graded]
    knn = {k: routed_score(knn_outcomes(features[fit], outcomes[fit], x, k), y) for k in KNN_CANDIDATES}
    ridges = {a: fit_ridge(features[fit], outcomes[fit], a) for a in RIDGE_CANDIDATES}
    ridge = {a: routed_score(ridge_outcomes(w, x), y) for a, w in ridges.items()}
    k, alpha = max(knn, key=knn.get), max(ridge, key=ridge.get)  # ties: the first candidate
    with torch.no_grad():
        heads = calibration.apply(head(x)[1]).sigmoid()
    unseen = OutcomeBlend(features[fit], outcomes[fit], k, ridges[alpha]).apply(x, heads)
    validation = {"heads": routed_score(heads, y), "blend": routed_score(unseen, y),
                  **{f"knn_k{c}": v for c, v in knn.items()}, **{f"ridge_alpha{c}": v for c, v in ridge.items()}}
    rows = torch.cat([fit, val])
    blend = OutcomeBlend(features[rows], outcomes[rows], k, fit_ridge(features[rows], outcomes[rows], alpha))
    return blend, {"knn_k": k, "ridge_alpha": alpha, "validation": {n: round(v, 4) for n, v in validation.items()}}


def split_rows(n: int, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (kept, held out) row indices, `share` of them held out (at least one)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = max(1, round(n * share))
    return order[cut:], order[:cut]


def role_targets(domains: list[str]) -> torch.Tensor:
    return torch.tensor([ROLES.index(DOMAIN_ROLE[d]) for d in domains], dtype=torch.long)


def outcome_matrix(files: list[Path]) -> tuple[list[str], list[str], torch.Tensor, dict[str, list[str]]]:
    """Merge outcome files (router/training/outcomes.py) into extra training rows: (their prompts, model names,
    (rows, models) scores with NaN = unknown, the names of the files each model was graded in)."""
    by_prompt: dict[str, dict[str, float]] = {}
    names: list[str] = []
    sources: dict[str, list[str]] = {}
    for path in files:
        outcomes = read_outcomes(path)
        for name, values in outcomes.scores.items():
            names += [name] if name not in names else []
            sources.setdefault(name, []).append(Path(path).name)
            for prompt, score in zip(outcomes.prompts, values):
                if score is not None:
                    by_prompt.setdefault(prompt, {})[name] = score
    rows = list(by_prompt)
    matrix = torch.full((len(rows), len(names)), math.nan)
    for i, prompt in enumerate(rows):
        for name, value in by_prompt[prompt].items():
            matrix[i, names.index(name)] = value
    return rows, names, matrix, sources


def training_items(limit: int | None, seed: int) -> list[dict]:
    """The role items `train` learns from (and its kNN reference holds): the whole dataset, or a seeded sample."""
    items = load()
    return random.Random(seed).sample(items, min(limit, len(items))) if limit else items


def reference_rows(items: list[dict], limit: int | None, seed: int) -> dict:
    """How to find a scorer's kNN reference rows again, with a digest that proves a rebuild found the same ones."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item['domain']}\0{item['prompt']}\0".encode())
    return {"n": len(items), "limit": limit, "seed": seed, "digest": digest.hexdigest()}


def draft_checkpoint_path(version: str) -> Path:
    """Where `train` writes unless told to publish: the cache, never the shipped checkpoint."""
    return default_cache_dir() / "router" / "checkpoints" / f"{version}-{time.strftime('%Y%m%d-%H%M%S')}.pt"


def train(out: Path | None = None, outcome_files: list[Path] = (), config: FitConfig = FitConfig(),
          limit: int | None = None, version: str = "scorer-v1", student: DistillConfig | None = None) -> Path:
    """The `train` command: role data from the packages (+ outcome files) -> a versioned checkpoint; with `student`,
    the scorer reads a student of the encoder, distilled or fine-tuned (trained first, on the same role items).
    With outcome files, a seeded share of their rows is held out: the heads stop at the epoch with the lowest outcome
    loss there, and each model's head is calibrated on it."""
    items = training_items(limit, config.seed)
    encoder = MiniLMEncoder() if student is None else student_encoder(items, student, progress=True)
    outcome_prompts, model_names, matrix, model_sources = outcome_matrix(list(outcome_files))
    kept, held = split_rows(len(outcome_prompts), VALIDATION_SHARE, config.seed) if outcome_prompts else ([], [])
    features = encoder.encode_cached([i["prompt"] for i in items] + outcome_prompts)
    fit_rows = torch.cat([torch.arange(len(items)), len(items) + torch.as_tensor(kept, dtype=torch.long)])
    roles = torch.cat([role_targets([i["domain"] for i in items]), torch.full((len(outcome_prompts),), -1)])
    outcomes = torch.cat([torch.full((len(items), len(model_names)), math.nan), matrix])
    groups = [i["source"] for i in items] + ["outcomes"] * len(outcome_prompts)
    validation = (features[len(items) + held], matrix[held]) if outcome_prompts else None
    head = fit_head(features[fit_rows], roles[fit_rows], outcomes[fit_rows], config, progress=True,
                    groups=[groups[i] for i in fit_rows.tolist()], validation=validation)
    calibration = blend = blend_choice = None
    if validation is not None:
        calibration = fit_calibration(head, *validation)
        blend, blend_choice = fit_outcome_blend(head, calibration, features[len(items):], matrix, kept, held)
    info = {"seed": config.seed, "epochs": config.epochs, "hidden": config.hidden, "members": config.members,
            "source_balance": config.source_balance, "label_smoothing": config.label_smoothing, "role_items": len(items),
            "outcome_items": len(outcome_prompts), "outcome_files": [Path(f).name for f in outcome_files],
            "model_sources": model_sources, "outcome_validation_items": len(held),
            "epochs_kept": head.epochs_kept if validation is not None else None, "outcome_blend": blend_choice,
            "student": describe(student),
            "domain_counts": {d: sum(i["domain"] == d for i in items) for d in DOMAIN_ROLE}}
    meta = {"version": version, "reference_rows": reference_rows(items, limit, config.seed)}
    scorer = Scorer(encoder, head, model_names, meta, reference_set(features[: len(items)], roles[: len(items)]),
                    calibration, blend)
    return scorer.save(out or draft_checkpoint_path(version), info)


def prepare(checkpoint: Path) -> dict:
    """What serving a checkpoint needs on this machine, built into the cache: its encoder's ONNX graph and its kNN
    reference (the training rows it names, re-embedded; refused if the pinned dataset no longer has those rows)."""
    blob = read_checkpoint(checkpoint)
    encoder = checkpoint_encoder(blob)
    built = []
    if blob["knn"] is not None:
        rows = blob["knn"]["rows"]
        path = reference_path(encoder, rows["digest"])
        if not path.exists():
            items = training_items(rows["limit"], rows["seed"])
            if reference_rows(items, rows["limit"], rows["seed"]) != rows:
                raise ValueError(f"{checkpoint}: the dataset no longer holds the {rows['n']} rows its kNN reference was "
                                 "built from (rebuild it with `python -m router data --force`, or retrain)")
            features = encoder.encode_cached([i["prompt"] for i in items])
            save_reference(path, reference_set(features, role_targets([i["domain"] for i in items])))
            built.append(str(path))
    scorer = Scorer.load(checkpoint, encoder)
    return {"checkpoint": str(checkpoint), "scorer": scorer.name, "encoder": encoder.info["features"], "built": built}
