"""Distillation: train a cheap encoder -- MiniLM's first few layers over a short token window -- to reproduce
the deployed encoder's embeddings (6 layers, 128 tokens), so the scorer can afford it and lose less of what the
full model knows.

Cutting layers and tokens without training leaves vectors the heads and the kNN vote were never meant to read
(cosine ~0.2 to the full model's: the first steps of the progress bar). Minutes of training on the prompts, with
the full model's embedding of each as the target (no labels), bring them closer. The word-embedding table stays
the package's (frozen), so a student is only the transformer layers, position embeddings and layer norms: ~7.8 MB
in float16.

Deterministic for a seed on the same thread count; `python -m router train --student 2:48` distils 4 epochs over
the dataset's 21,662 prompts in ~9.5 of its 10.3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from router.catalog import default_cache_dir
from router.data import source_fold
from router.encoder import LAYERS, MAX_TOKENS, MiniLMEncoder, PooledMiniLM, pad
from router.sources import encoder_dir


@dataclass(frozen=True)
class DistillConfig:
    layers: int = 2
    tokens: int = 32
    epochs: int = 4  # with lr 1e-3: 2 layers over 48 tokens route 78.4 % leave-sources-out (docs/router/README.md)
    lr: float = 1e-3  # peak; linear warm-up, then linear decay to 0
    batch_size: int = 64
    warmup: int = 100  # optimiser steps of linear warm-up
    seed: int = 0


def parse_student(spec: str) -> DistillConfig:
    """'LAYERS:TOKENS' (the command-line form) -> that student's DistillConfig, other settings default."""
    try:
        layers, tokens = (int(x) for x in spec.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYERS:TOKENS such as 2:48, got {spec!r}") from None
    if not (1 <= layers <= LAYERS and 1 <= tokens <= MAX_TOKENS):
        raise argparse.ArgumentTypeError(f"{spec}: layers must be 1-{LAYERS} and tokens 1-{MAX_TOKENS} (the full encoder's)")
    return DistillConfig(layers=layers, tokens=tokens)


STUDENT_GROUPS = 2  # leave-sources-out: students per variant, each distilled on the folds with fold % this == its index
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


def distill(texts: list[str], teacher: torch.Tensor, config: DistillConfig = DistillConfig(),
            progress: bool = False) -> dict[str, torch.Tensor]:
    """Train a student on (text, teacher unit vector) pairs by cosine distance; its trained weights (float16)."""
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    tokenizer = Tokenizer.from_file(str(encoder_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(config.tokens)
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    student = PooledMiniLM(config.layers)
    student.model.embeddings.word_embeddings.weight.requires_grad_(False)
    trained = [p for p in student.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trained, lr=config.lr, weight_decay=0.01)
    plan = [b for _ in range(config.epochs) for b in batches([len(x) for x in ids], config.batch_size, rng)]
    student.train()
    bar = tqdm(plan, desc=f"distil {config.layers} layers, {config.tokens} tokens", disable=not progress)
    for step, rows in enumerate(bar):
        for group in optimiser.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup) * (1 - step / len(plan))
        input_ids, mask = (torch.from_numpy(a) for a in pad([ids[i] for i in rows]))
        loss = (1 - (student(input_ids, mask) * teacher[rows]).sum(1)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        bar.set_postfix(cosine=f"{1 - loss.item():.3f}", refresh=False)
    names = {name for name, p in student.model.named_parameters() if p.requires_grad}
    return {name: value.detach().half() for name, value in student.model.state_dict().items() if name in names}


def distill_cached(texts: list[str], teacher: torch.Tensor, config: DistillConfig = DistillConfig(),
                   progress: bool = False) -> dict[str, torch.Tensor]:
    """`distill`, kept on disk under `.cache/router/students/` by config and prompts (same weights, trained once)."""
    key = hashlib.sha256(repr(config).encode() + "\0".join(texts).encode()).hexdigest()[:12]
    path = default_cache_dir() / "router" / "students" / f"student-{key}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    weights = distill(texts, teacher, config, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return weights


def held_out_students(items: list[dict], folds: int, config: DistillConfig = DistillConfig(), quantized: bool = True,
                      progress: bool = False) -> Callable[[int], MiniLMEncoder]:
    """For `leave_sources_out`: STUDENT_GROUPS students, each distilled on the prompts of one group of folds; a
    held-out fold is embedded by a student that never saw its prompts (so each learns from ~half the data: the
    estimate is, if anything, pessimistic for a student distilled on all of it)."""
    texts = [i["prompt"] for i in items]
    teacher = MiniLMEncoder().encode_cached(texts)
    group_of = [source_fold(i["source"], folds) % STUDENT_GROUPS for i in items]
    students = []
    for group in range(STUDENT_GROUPS):
        rows = [r for r, g in enumerate(group_of) if g == group]
        weights = distill_cached([texts[r] for r in rows], teacher[rows], config, progress)
        students.append(MiniLMEncoder(config.tokens, config.layers, quantized, weights))
    return lambda fold: students[(fold + 1) % STUDENT_GROUPS]
