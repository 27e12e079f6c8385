"""Quality routing on per-model outcomes (RouteLLM layout): train a fresh quality head on some files, route
the test files between a strong and a weak model by predicted gain, and report the cost-quality curve.

Metrics (as in ../shared/data/routellm/README.md): PGR(share) = (router accuracy - weak) / (strong - weak)
when `share` of the test prompts go to the strong model (the ones with the largest predicted gain
P(strong right) - P(weak right)); APGR = mean PGR over shares 0, 1, ..., 100 %; CPT(x) = the smallest share
reaching PGR >= x. The random router's expected PGR equals the share, hence APGR 0.5 and CPT(x) = x.

Hyper-parameters (the number of epochs) are chosen without looking at the test files: every VAL_EVERY-th train
file (in the order given, starting with the first) is held out as a validation set, a head is fitted on the
other train files for each candidate, the candidate with the best validation APGR (ties: fewer epochs) is
refitted on all train files and only then scored on the test files.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from router.training.outcomes import read_outcomes
from router.encoder import MiniLMEncoder
from router.training.encoder_finetune import FinetuneConfig, student_encoder
from router.training.train import FitConfig, fit_head

SHARES = [i / 100 for i in range(101)]
EPOCH_CANDIDATES = (1, 2, 3, 5, 8, 12)
VAL_EVERY = 4


def match_column(columns: list[str], needle: str, path: Path) -> str:
    hits = [c for c in columns if needle.lower() in c.lower()]
    if len(hits) != 1:
        raise ValueError(f"{path}: {needle!r} matches {hits or 'no'} column(s) of {columns}; give a unique substring")
    return hits[0]


def read_pairs(files: list[Path], strong: str, weak: str, exclude: set[str]) -> tuple[list[str], torch.Tensor]:
    """Prompts and a (n, 2) [weak, strong] correctness matrix from outcome CSVs, minus excluded prompts."""
    prompts, outcomes = [], []
    for path in files:
        outcomes_file = read_outcomes(path)
        file_prompts, columns = outcomes_file.prompts, outcomes_file.scores
        s, w = match_column(list(columns), strong, path), match_column(list(columns), weak, path)
        for i, prompt in enumerate(file_prompts):
            if prompt not in exclude and columns[w][i] is not None and columns[s][i] is not None:
                prompts.append(prompt)
                outcomes.append([float(columns[w][i]), float(columns[s][i])])
    return prompts, torch.tensor(outcomes)


def read_excluded(files: list[Path]) -> set[str]:
    """Evaluation prompts listed in RouteLLM contamination files (JSONL with `eval_prompt`)."""
    excluded = set()
    for path in files:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                excluded.add(json.loads(line)["eval_prompt"])
    return excluded


def curve(score: torch.Tensor, outcomes: torch.Tensor) -> list[float]:
    """Accuracy at each share of strong calls, the highest-scoring prompts going to the strong model."""
    order = score.argsort(descending=True, stable=True)
    weak, strong = outcomes[order, 0], outcomes[order, 1]
    n = len(score)
    gain_prefix = torch.cat([torch.zeros(1), (strong - weak).cumsum(0)])
    return [float((weak.sum() + gain_prefix[round(share * n)]) / n) for share in SHARES]


def subject_oracle_scores(files: list[Path], strong: str, weak: str, exclude: set[str]) -> torch.Tensor:
    """Each prompt scored by its own file's true mean gain: a router that tells subjects apart perfectly and
    nothing within a subject. Its APGR is the ceiling of subject-level routing, the context for the router's."""
    parts = [read_pairs([path], strong, weak, exclude)[1] for path in files]
    return torch.cat([(p[:, 1] - p[:, 0]).mean().expand(len(p)) for p in parts if len(p)])


def summarise(accuracies: list[float], weak_acc: float, strong_acc: float) -> dict:
    pgr = [(a - weak_acc) / (strong_acc - weak_acc) for a in accuracies]
    cpt = {x: next((s for s, p in zip(SHARES, pgr) if p >= x), 1.0) for x in (0.5, 0.8)}
    return {"apgr": round(sum(pgr) / len(pgr), 4), "cpt50": cpt[0.5], "cpt80": cpt[0.8], "pgr": [round(p, 4) for p in pgr]}


def fit_and_score(encoder: MiniLMEncoder, train: tuple[list[str], torch.Tensor], test: tuple[list[str], torch.Tensor],
                  config: FitConfig) -> dict:
    """Fit a quality head on `train` (prompts, outcomes) and summarise its routing curve on `test`."""
    (train_prompts, train_outcomes), (test_prompts, test_outcomes) = train, test
    head = fit_head(encoder.encode_cached(train_prompts), torch.full((len(train_prompts),), -1), train_outcomes, config)
    with torch.inference_mode():
        predicted = head(encoder.encode_cached(test_prompts))[1].sigmoid()
    weak_acc, strong_acc = test_outcomes[:, 0].mean().item(), test_outcomes[:, 1].mean().item()
    return summarise(curve(predicted[:, 1] - predicted[:, 0], test_outcomes), weak_acc, strong_acc)


def choose_epochs(encoder: MiniLMEncoder, train_files: list[Path], strong: str, weak: str, exclude: set[str],
                  config: FitConfig, candidates: tuple[int, ...]) -> dict:
    """Validation APGR per epoch count, on held-out train files only; the best one (ties: fewer epochs)."""
    val_files = train_files[::VAL_EVERY]
    fit_files = [f for f in train_files if f not in val_files]
    if not fit_files:
        raise ValueError(f"need at least 2 train files to carve a validation set (every {VAL_EVERY}th is held out)")
    fit = read_pairs(fit_files, strong, weak, set())
    val = read_pairs(val_files, strong, weak, exclude)
    apgr = {e: fit_and_score(encoder, fit, val, replace(config, epochs=e))["apgr"] for e in candidates}
    best = max(candidates, key=lambda e: (apgr[e], -e))
    return {"files": [Path(f).name for f in val_files], "n": len(val[0]), "apgr_by_epochs": apgr, "epochs": best}


def sources_of_files(files: list[Path], sources: set[str]) -> set[str]:
    """The dataset sources outcome files hold, by name (`mmlu_professional_law.csv` -> `mmlu/professional law`,
    `gsm8k_responses.csv` -> `gsm8k`); a file that names no source is refused rather than guessed."""
    found = set()
    for path in files:
        stem = Path(path).stem
        named = {s for s in sources if stem == (key := s.replace("/", "_").replace(" ", "_")) or stem.startswith(key + "_")}
        if not named:
            raise ValueError(f"{path}: its name matches no dataset source, so its prompts cannot be kept out of fine-tuning")
        found |= named
    return found


def role_encoder_without(test_files: list[Path], finetune: FinetuneConfig) -> MiniLMEncoder:
    """The encoder fine-tuned on the dataset's role labels as the deployed scorer's is, minus the sources the test
    files hold, so no test prompt reaches it (the deployed encoder saw every MMLU subject's prompts)."""
    from router.training.data import load

    items = load()
    held_out = sources_of_files(test_files, {i["source"] for i in items})
    return student_encoder([i for i in items if i["source"] not in held_out], finetune, progress=True)


def quality_eval(train_files: list[Path], test_files: list[Path], strong: str, weak: str,
                 exclude_files: list[Path] = (), config: FitConfig = FitConfig(),
                 epoch_candidates: tuple[int, ...] = EPOCH_CANDIDATES, role_finetuned: FinetuneConfig | None = None) -> dict:
    """Route the test files by a quality head fitted on the train files, on the frozen encoder's vectors or
    on those of an encoder fine-tuned (with `role_finetuned`'s seeds) on the role labels without the test files' sources."""
    exclude = read_excluded(list(exclude_files))
    encoder = role_encoder_without(test_files, role_finetuned) if role_finetuned else MiniLMEncoder()
    validation = choose_epochs(encoder, list(train_files), strong, weak, exclude, config, tuple(epoch_candidates))
    config = replace(config, epochs=validation["epochs"])
    train_prompts, train_outcomes = read_pairs(train_files, strong, weak, set())
    test_prompts, test_outcomes = read_pairs(test_files, strong, weak, exclude)
    router = fit_and_score(encoder, (train_prompts, train_outcomes), (test_prompts, test_outcomes), config)
    weak_acc, strong_acc = test_outcomes[:, 0].mean().item(), test_outcomes[:, 1].mean().item()
    random_acc = [weak_acc + s * (strong_acc - weak_acc) for s in SHARES]
    oracle = summarise(curve(subject_oracle_scores(test_files, strong, weak, exclude), test_outcomes), weak_acc, strong_acc)
    return {
        "n": len(test_prompts), "n_train": len(train_prompts), "weak_acc": round(weak_acc, 4),
        "strong_acc": round(strong_acc, 4), **{k: router[k] for k in ("apgr", "cpt50", "cpt80")},
        "random": {k: v for k, v in summarise(random_acc, weak_acc, strong_acc).items() if k != "pgr"},
        "subject_oracle": {k: v for k, v in oracle.items() if k != "pgr"},
        "curve": {"strong_share": SHARES, "router_pgr": router["pgr"]},
        "train_files": [Path(f).name for f in train_files], "test_files": [Path(f).name for f in test_files],
        "excluded_contaminated": len(exclude), "strong": strong, "weak": weak, "seed": config.seed,
        "epochs": config.epochs, "members": config.members, "validation": validation, "encoder": encoder.info["features"],
    }


def plot(report: dict, path: Path, title: str) -> None:
    """Accuracy vs share of strong-model calls: the router, random, and the two single models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = report["curve"]["strong_share"]
    weak, strong = report["weak_acc"], report["strong_acc"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(shares, [weak + p * (strong - weak) for p in report["curve"]["router_pgr"]], label=f"router (APGR {report['apgr']:.2f})")
    ax.plot([0, 1], [weak, strong], "--", label="random (APGR 0.50)")
    ax.scatter([0, 1], [weak, strong], color="black", zorder=3, label="single models")
    ax.set_xlabel("share of calls to the strong model (cost)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
