"""Encoder students: a distilled one learns the full encoder's embeddings, a fine-tuned one separates the roles;
either travels inside the checkpoint, and leave-sources-out never embeds a held-out fold with a student that saw
its prompts."""

from dataclasses import replace

import pytest
import torch

from router.training import data, encoder_finetune as students
from router.encoder import MiniLMEncoder
from router.training.evaluate import fold_of_source
from router.scorer import Scorer
from router.training.encoder_finetune import DistillConfig, FinetuneConfig, held_out_students
from router.training.train import FitConfig, role_targets, train

TINY = DistillConfig(layers=1, tokens=16, epochs=2, lr=1e-3, batch_size=16, warmup=1)
TINY_FINETUNE = FinetuneConfig(layers=1, tokens=16, epochs=3, lr=1e-3, batch_size=16, warmup=1)


def sample(n: int) -> list[dict]:
    items = data.load()
    return items[:: len(items) // n][:n]


def role_margin(vectors: torch.Tensor, roles: torch.Tensor) -> float:
    """Mean over prompts of (cosine to its own role's centroid - the best cosine to another role's centroid)."""
    centroids = torch.nn.functional.normalize(torch.stack([vectors[roles == r].mean(0) for r in range(4)]), dim=1)
    cosines = vectors @ centroids.T
    own = cosines.gather(1, roles[:, None]).squeeze(1)
    return (own - cosines.scatter(1, roles[:, None], -2.0).max(1).values).mean().item()


def role_sample() -> tuple[list[dict], list[str], torch.Tensor]:
    """120 items, half of them general, every role present: their prompts and role targets."""
    items = [i for i in sample(400) if i["domain"] != "general"][:60] + [i for i in sample(400) if i["domain"] == "general"][:60]
    return items, [i["prompt"] for i in items], role_targets([i["domain"] for i in items])


def test_distillation_moves_a_student_towards_the_full_encoder_and_is_deterministic():
    texts = [i["prompt"] for i in sample(96)]
    teacher = MiniLMEncoder().encode_cached(texts)
    untrained = MiniLMEncoder(TINY.tokens, TINY.layers).encode(texts)
    weights = students.distill(texts, teacher, TINY)
    student = MiniLMEncoder(TINY.tokens, TINY.layers, student=weights)
    cosine_before = (untrained * teacher).sum(1).mean()
    cosine_after = (student.encode(texts) * teacher).sum(1).mean()
    assert cosine_after > cosine_before + 0.1
    assert "word_embeddings" not in " ".join(weights)  # the package's table stays; only the layers travel
    again = students.distill(texts, teacher, TINY)
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert student.info["features"].startswith("minilm-l1-mean-pooled-onnxruntime-fp32-student-")


def test_fine_tuning_pulls_prompts_of_one_role_together_and_is_deterministic():
    items, texts, roles = role_sample()
    weights = students.finetune(items, TINY_FINETUNE)
    before = role_margin(MiniLMEncoder(TINY_FINETUNE.tokens, TINY_FINETUNE.layers).encode(texts), roles)
    after = role_margin(MiniLMEncoder(TINY_FINETUNE.tokens, TINY_FINETUNE.layers, student=weights).encode(texts), roles)
    assert after > before + 0.05
    again = students.finetune(items, TINY_FINETUNE)
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_a_fine_tune_soup_averages_its_seeds_each_trained_once_and_still_separates_the_roles(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECIALISTS_CACHE", str(tmp_path))
    items, texts, roles = role_sample()
    config = replace(TINY_FINETUNE, soup=2)
    weights = students.student_weights(items, config)
    members = [students.finetune(items, replace(config, seed=seed)) for seed in (0, 1)]
    assert not torch.equal(members[0]["encoder.layer.0.output.dense.weight"], members[1]["encoder.layer.0.output.dense.weight"])
    mean = {k: (members[0][k].float() + members[1][k].float()) / 2 for k in weights}
    assert all(torch.allclose(weights[k].float(), mean[k], rtol=1e-3, atol=1e-4) for k in weights)  # float16's rounding
    assert len(list((tmp_path / "router" / "students").iterdir())) == 2  # the members, keyed as single fine-tunes
    assert students.student_weights(items, replace(config, soup=1)).keys() == weights.keys()  # seed 0's, from the cache
    assert len(list((tmp_path / "router" / "students").iterdir())) == 2
    before = role_margin(MiniLMEncoder(config.tokens, config.layers).encode(texts), roles)
    after = role_margin(MiniLMEncoder(config.tokens, config.layers, student=weights).encode(texts), roles)
    assert after > before + 0.05


def test_finetune_seeds_on_the_command_line_are_one_seed_or_a_range_and_default_to_a_soup_of_three():
    from router.training.cli import parser

    def parsed(*finetune: str) -> FinetuneConfig:
        return parser().parse_args(["eval", "--loso", "--finetune", *finetune]).student

    assert (parsed().seed, parsed().soup) == (0, 3) and parsed() == FinetuneConfig()
    assert (parsed("1").seed, parsed("1").soup) == (1, 1) and (parsed("0-1").seed, parsed("0-1").soup) == (0, 2)
    for bad in ("2-1", "x", "1-"):
        with pytest.raises(SystemExit):
            parsed(bad)


@pytest.mark.parametrize("config", [TINY, replace(TINY_FINETUNE, quantized=False)], ids=["distilled-int8", "fine-tuned-fp32"])
def test_a_checkpoint_carries_its_student_and_load_rebuilds_that_encoder(tmp_path, config):
    path = train(tmp_path / "s.pt", config=FitConfig(epochs=2, hidden=32, members=1), limit=300, student=config)
    scorer = Scorer.load(path)
    assert scorer.encoder.student is not None and scorer.encoder.layers == config.layers
    assert scorer.encoder.quantized == config.quantized  # the checkpoint says how its encoder runs
    texts = ["Write a Python function that reverses a list.", "What is 17 * 23?"]
    assert scorer.predict(texts)[0].sum(1).allclose(torch.ones(2))
    assert torch.equal(scorer.predict(texts)[0], Scorer.load(path).predict(texts)[0])


@pytest.mark.parametrize("folds", [10, 0], ids=["ten-folds", "one-source-per-fold"])
def test_leave_sources_out_embeds_each_fold_with_a_student_that_never_saw_it(monkeypatch, folds):
    items, trained_on = sample(200), {}
    real = students.student_weights

    def recording(items, config, progress=False):
        weights = real(items, config, progress)
        trained_on[id(weights)] = {i["prompt"] for i in items}
        return weights

    monkeypatch.setattr(students, "student_weights", recording)
    encoder_for = held_out_students(items, TINY)
    fold_of = fold_of_source({i["source"] for i in items}, folds)
    for fold in set(fold_of.values()):
        held_out = {i["prompt"] for i in items if fold_of[i["source"]] == fold}
        encoder = encoder_for({s for s, f in fold_of.items() if f == fold})
        assert held_out and not held_out & trained_on[id(encoder.student)]


def test_students_refuse_folds_that_mix_their_groups():
    items = sample(200)
    encoder_for = held_out_students(items, TINY)
    with pytest.raises(ValueError, match="student groups"):
        encoder_for({i["source"] for i in items})
