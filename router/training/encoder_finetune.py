"""Encoder students: MiniLM's layers trained further, two ways, so the scorer reads better vectors.

- Distilled (`DistillConfig`): the first few layers over a short token window trained to reproduce the deployed
  encoder's embeddings (6 layers, 128 tokens), no labels -- so a cheap encoder loses less of what the full model
  knows. Cutting layers and tokens without training leaves vectors the heads and the kNN vote were never meant
  to read (cosine ~0.2 to the full model's: the first steps of the progress bar).
- Fine-tuned (`FinetuneConfig`): the full encoder trained on the role labels (a linear role classifier on the
  pooled vector, source-balanced and label-smoothed like the heads; the classifier is then thrown away and the
  heads are fitted on the new vectors as usual) -- so the embedding space itself separates the roles, which a
  frozen sentence encoder only does by accident. Three seeds are fine-tuned and their weights averaged (a model
  soup), so no one seed's luck decides what a retrain routes. Same cost per prompt as the deployed encoder.

Either way the word-embedding table stays the package's (frozen), so a student is only the transformer layers,
position embeddings and layer norms (float16: ~7.8 MB for 2 layers, ~22 MB for 6). Deterministic for a seed on
the same thread count. `python -m router train --student 2:48` distils 4 epochs over the dataset's 21,662 prompts
in ~9.5 of its 10.3 minutes on 2 cores; `--finetune` trains the full encoder for one epoch three times (seeds
0-2, 11-14 minutes each on the 22,722 prompts of dataset v4), then averages them.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm import tqdm

from router.catalog import ROLES, default_cache_dir
from router.training.data import source_fold
from router.encoder import DIM, LAYERS, MAX_TOKENS, MiniLMEncoder, PooledMiniLM, pad, wordpiece_tokenizer


@dataclass(frozen=True)
class DistillConfig:
    layers: int = 2
    tokens: int = 32
    epochs: int = 4  # with lr 1e-3: 2 layers over 48 tokens route 78.4 % leave-sources-out (docs/router/README.md)
    lr: float = 1e-3  # peak; linear warm-up, then linear decay to 0
    batch_size: int = 64
    warmup: int = 100  # optimiser steps of linear warm-up
    seed: int = 0
    quantized: bool = True  # the scorer runs a distilled student as int8 (it exists to be cheap)


@dataclass(frozen=True)
class FinetuneConfig(DistillConfig):
    layers: int = LAYERS
    tokens: int = MAX_TOKENS
    epochs: int = 1  # usual BERT fine-tuning settings, not tuned on the evaluation beyond lr (docs/router/README.md)
    lr: float = 5e-5
    batch_size: int = 32
    warmup: int = 30
    quantized: bool = True  # int8 per channel: 6.5 -> 4.4 ms a prompt for 0.1 point (docs/router/README.md)
    label_smoothing: float = 0.1  # as FitConfig
    source_balance: float = 0.5  # as FitConfig: an item weighs (items in its source) ** -this
    logit_scale: float = 20.0  # unit vectors -> classifier logits with a usable range
    # fine-tunes from seeds seed, seed + 1, ... averaged weight by weight (`soup`): one seed's fit moves single held-out
    # sources by up to 9 points (docs/router/README.md); left out of the repr, which keys one fine-tune's cache entry
    soup: int = field(default=3, repr=False)


def parse_student(spec: str) -> DistillConfig:
    """'LAYERS:TOKENS' (the command-line form) -> that student's DistillConfig, other settings default."""
    try:
        layers, tokens = (int(x) for x in spec.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYERS:TOKENS such as 2:48, got {spec!r}") from None
    if not (1 <= layers <= LAYERS and 1 <= tokens <= MAX_TOKENS):
        raise argparse.ArgumentTypeError(f"{spec}: layers must be 1-{LAYERS} and tokens 1-{MAX_TOKENS} (the full encoder's)")
    return DistillConfig(layers=layers, tokens=tokens)


def parse_finetune(spec: str) -> FinetuneConfig:
    """'SEED' or 'FIRST-LAST' (the command-line form) -> one fine-tune with that seed, or the soup of those seeds."""
    first, dash, last = spec.partition("-")
    try:
        seeds = range(int(first), int(last if dash else first) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed such as 1 or a range of seeds such as 0-2, got {spec!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"{spec}: the range of seeds is empty (write the lower seed first)")
    return FinetuneConfig(seed=seeds[0], soup=len(seeds))


def describe(config: DistillConfig | None) -> dict | None:
    """What a checkpoint or report records about its student: the kind of training and its settings."""
    if config is None:
        return None
    return {"kind": "fine-tuned" if isinstance(config, FinetuneConfig) else "distilled", **asdict(config)}


STUDENT_GROUPS = 2  # leave-sources-out: students per variant; student g learns from the sources with source_fold(source, this) == g
BUCKET = 50  # batches per length bucket: shuffled prompts are sorted by length in groups of this many batches


def batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of row indices: shuffled, then sorted by length within buckets so a batch pads little."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    out = []
    for start in range(0, len(order), batch_size * BUCKET):
        bucket = sorted(order[start : start + batch_size * BUCKET], key=lambda i: lengths[i])
        out += [bucket[b : b + batch_size] for b in range(0, len(bucket), batch_size)]
    rng.shuffle(out)
    return out


class CosineToTeacher(torch.nn.Module):
    """Distillation loss: 1 - cosine between the student's vector and the full encoder's, per prompt."""

    def __init__(self, teacher: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("teacher", teacher)

    def forward(self, vectors: torch.Tensor, rows: list[int]) -> torch.Tensor:
        return (1 - (vectors * self.teacher[rows]).sum(1)).mean()


class RoleLoss(torch.nn.Module):
    """Fine-tuning loss: a linear role classifier on the pooled unit vector, weighted, label-smoothed cross-entropy."""

    def __init__(self, roles: torch.Tensor, weights: torch.Tensor, config: FinetuneConfig) -> None:
        super().__init__()
        self.classifier = torch.nn.Linear(DIM, len(ROLES))
        torch.nn.init.zeros_(self.classifier.weight)  # deterministic, and the first steps teach the classifier, not the encoder
        torch.nn.init.zeros_(self.classifier.bias)
        self.register_buffer("roles", roles)
        self.register_buffer("weights", weights)
        self.config = config

    def forward(self, vectors: torch.Tensor, rows: list[int]) -> torch.Tensor:
        logits = self.classifier(vectors * self.config.logit_scale)
        loss = torch.nn.functional.cross_entropy(logits, self.roles[rows], reduction="none",
                                                 label_smoothing=self.config.label_smoothing)
        return (loss * self.weights[rows]).sum() / self.weights[rows].sum()


def train_layers(texts: list[str], objective: torch.nn.Module, config: DistillConfig,
                 progress: bool = False) -> dict[str, torch.Tensor]:
    """Train `PooledMiniLM(config.layers)` (word embeddings frozen) and the objective's own parameters on the
    prompts, minimising `objective(vectors, rows)`; the model's trained weights (float16)."""
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    ids = [e.ids for e in wordpiece_tokenizer(config.tokens).encode_batch(texts)]
    student = PooledMiniLM(config.layers)
    student.model.embeddings.word_embeddings.weight.requires_grad_(False)
    trained = [p for p in [*student.parameters(), *objective.parameters()] if p.requires_grad]
    optimiser = torch.optim.AdamW(trained, lr=config.lr, weight_decay=0.01)
    plan = [b for _ in range(config.epochs) for b in batches([len(x) for x in ids], config.batch_size, rng)]
    student.train()
    kind = "fine-tune" if isinstance(config, FinetuneConfig) else "distil"
    bar = tqdm(plan, desc=f"{kind} {config.layers} layers, {config.tokens} tokens", disable=not progress)
    for step, rows in enumerate(bar):
        for group in optimiser.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup) * (1 - step / len(plan))
        input_ids, mask = (torch.from_numpy(a) for a in pad([ids[i] for i in rows]))
        loss = objective(student(input_ids, mask), rows)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    names = {name for name, p in student.model.named_parameters() if p.requires_grad}
    return {name: value.detach().half() for name, value in student.model.state_dict().items() if name in names}


def distill(texts: list[str], teacher: torch.Tensor, config: DistillConfig = DistillConfig(),
            progress: bool = False) -> dict[str, torch.Tensor]:
    """Train a student on (text, teacher unit vector) pairs by cosine distance; its trained weights (float16)."""
    return train_layers(texts, CosineToTeacher(teacher), config, progress)


def finetune(items: list[dict], config: FinetuneConfig = FinetuneConfig(), progress: bool = False) -> dict[str, torch.Tensor]:
    """Train the encoder's layers on the items' roles, weighted by source like the heads; its trained weights."""
    from router.training.train import FitConfig, role_targets, role_weights  # router.training.train builds scorers from students

    roles = role_targets([i["domain"] for i in items])
    weights = role_weights(roles, [i["source"] for i in items], FitConfig(source_balance=config.source_balance))
    return train_layers([i["prompt"] for i in items], RoleLoss(roles, weights, config), config, progress)


def soup(members: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A uniform model soup: the members' weights averaged. Fine-tunes of one start at a small learning rate stay in
    one basin, so their average is a fine-tune too, with less of any one seed's luck in it."""
    return {name: (sum(m[name].float() for m in members) / len(members)).half() for name in members[0]}


def student_weights(items: list[dict], config: DistillConfig, progress: bool = False) -> dict[str, torch.Tensor]:
    """A student trained on the items, distilled or fine-tuned by the config's kind; kept on disk under
    `.cache/router/students/` by config and what it learns from (same weights, trained once), a soup's members
    one by one."""
    if isinstance(config, FinetuneConfig) and config.soup > 1:
        return soup([student_weights(items, replace(config, seed=config.seed + k, soup=1), progress) for k in range(config.soup)])
    texts = [i["prompt"] for i in items]
    labelled = [f"{i['prompt']}\0{i['domain']}\0{i['source']}" for i in items]
    learns_from = labelled if isinstance(config, FinetuneConfig) else texts
    trained_as = replace(config, quantized=False)  # int8 is applied at export: both run the same trained weights
    key = hashlib.sha256(repr(trained_as).encode() + "\0".join(learns_from).encode()).hexdigest()[:12]
    path = default_cache_dir() / "router" / "students" / f"student-{key}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(config, FinetuneConfig):
        weights = finetune(items, config, progress)
    else:
        weights = distill(texts, MiniLMEncoder().encode_cached(texts), config, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return weights


def student_encoder(items: list[dict], config: DistillConfig, progress: bool = False) -> MiniLMEncoder:
    """The encoder a scorer reads when it has a student trained on these items."""
    return MiniLMEncoder(config.tokens, config.layers, config.quantized, student_weights(items, config, progress))


def held_out_students(items: list[dict], config: DistillConfig = DistillConfig(),
                      progress: bool = False) -> Callable[[set[str]], MiniLMEncoder]:
    """For `leave_sources_out`: STUDENT_GROUPS students, each trained on the items of one group of sources (by
    stable hash); held-out sources are embedded by a student that never saw their prompts (so each learns from
    ~half the data: the estimate is, if anything, pessimistic for a student trained on all of it)."""
    students = [student_encoder([i for i in items if source_fold(i["source"], STUDENT_GROUPS) == group], config, progress)
                for group in range(STUDENT_GROUPS)]

    def encoder_for(held_out: set[str]) -> MiniLMEncoder:
        groups = {source_fold(source, STUDENT_GROUPS) for source in held_out}
        if len(groups) != 1:
            raise ValueError(f"held-out sources {sorted(held_out)} span {len(groups)} student groups: with students, "
                             f"use a number of folds divisible by {STUDENT_GROUPS}, or 0 (one source per fold)")
        return students[(groups.pop() + 1) % STUDENT_GROUPS]

    return encoder_for
