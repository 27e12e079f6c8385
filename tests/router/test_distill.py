"""A distilled student learns the full encoder's embeddings, travels inside the checkpoint, and leave-sources-out
never embeds a held-out fold with a student that saw its prompts."""

import torch

from router import data, distill
from router.data import source_fold
from router.distill import DistillConfig, held_out_students
from router.encoder import MiniLMEncoder
from router.scorer import Scorer
from router.train import FitConfig, train

TINY = DistillConfig(layers=1, tokens=16, epochs=2, lr=1e-3, batch_size=16, warmup=1)


def sample(n: int) -> list[dict]:
    items = data.load()
    return items[:: len(items) // n][:n]


def test_distillation_moves_a_student_towards_the_full_encoder_and_is_deterministic():
    texts = [i["prompt"] for i in sample(96)]
    teacher = MiniLMEncoder().encode_cached(texts)
    untrained = MiniLMEncoder(TINY.tokens, TINY.layers).encode(texts)
    weights = distill.distill(texts, teacher, TINY)
    student = MiniLMEncoder(TINY.tokens, TINY.layers, student=weights)
    cosine_before = (untrained * teacher).sum(1).mean()
    cosine_after = (student.encode(texts) * teacher).sum(1).mean()
    assert cosine_after > cosine_before + 0.1
    assert "word_embeddings" not in " ".join(weights)  # the package's table stays; only the layers travel
    again = distill.distill(texts, teacher, TINY)
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert student.info["features"].startswith("minilm-l1-mean-pooled-onnxruntime-fp32-distilled-")


def test_a_checkpoint_carries_its_student_and_load_rebuilds_that_encoder(tmp_path):
    path = train(tmp_path / "s.pt", config=FitConfig(epochs=2, hidden=32, members=1), limit=300, student=TINY)
    scorer = Scorer.load(path)
    assert scorer.encoder.student is not None and scorer.encoder.quantized and scorer.encoder.layers == TINY.layers
    texts = ["Write a Python function that reverses a list.", "What is 17 * 23?"]
    assert scorer.predict(texts)[0].sum(1).allclose(torch.ones(2))
    assert torch.equal(scorer.predict(texts)[0], Scorer.load(path).predict(texts)[0])


def test_leave_sources_out_embeds_each_fold_with_a_student_that_never_saw_it(monkeypatch):
    items, folds, seen = sample(200), 10, []
    real = distill.distill_cached

    def recording(texts, teacher, config, progress=False):
        seen.append(set(texts))
        return real(texts, teacher, config, progress)

    monkeypatch.setattr(distill, "distill_cached", recording)
    encoder_for_fold = held_out_students(items, folds, TINY, quantized=False)
    trained_on = {id(encoder_for_fold(1)): seen[0], id(encoder_for_fold(0)): seen[1]}  # each student serves the other group
    for fold in range(folds):
        held_out = {i["prompt"] for i in items if source_fold(i["source"], folds) == fold}
        assert not held_out & trained_on[id(encoder_for_fold(fold))]
