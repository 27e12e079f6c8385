"""Training converges on a small sample, the checkpoint round-trips, and `eval` prints the promised fields."""

import json

import pytest
import torch

from router import data
from router.__main__ import main
from router.scorer import Scorer
from router.train import FitConfig, fit_head, role_targets, train


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "scorer-test.pt"
    return train(path, config=FitConfig(epochs=4, hidden=64), limit=1500, version="scorer-test")


def test_training_on_a_small_sample_converges():
    items = [i for i in data.load() if i["source"] in ("gsm8k", "humaneval", "healthbench", "ifeval")][:800]
    from router.encoder import MiniLMEncoder

    x, y = MiniLMEncoder().encode_cached([i["prompt"] for i in items]), role_targets([i["domain"] for i in items])
    head = fit_head(x, y, config=FitConfig(epochs=15, hidden=64))
    with torch.inference_mode():
        accuracy = (head(x)[0].argmax(1) == y).float().mean().item()
    assert accuracy > 0.95


def test_checkpoint_round_trip_is_small_and_predicts_the_same(small_checkpoint):
    assert small_checkpoint.stat().st_size < 2_000_000
    scorer = Scorer.load(small_checkpoint)
    again = Scorer.load(small_checkpoint)
    texts = ["Write a Python function that reverses a list.", "What is 17 * 23?"]
    assert torch.equal(scorer.predict(texts)[0], again.predict(texts)[0])
    assert scorer.name == "mlp:scorer-test" and scorer.predict(texts)[0].sum(1).allclose(torch.ones(2))


def test_outcome_heads_are_trained_from_a_quality_matrix(tmp_path):
    matrix = tmp_path / "q.csv"
    matrix.write_text("prompt,alpha,beta\n" + "".join(f"What is {i} + {i}?,{i % 2 == 0},True\n" for i in range(40)))
    path = train(tmp_path / "s.pt", [matrix], FitConfig(epochs=2, hidden=32), limit=300)
    assert Scorer.load(path).model_names == ["alpha", "beta"]


def test_eval_prints_the_promised_fields(small_checkpoint, tmp_path, capsys, monkeypatch):
    reference = data.load()[::40]  # kNN/majority reference set: a sample keeps the test fast on a cold cache
    monkeypatch.setattr(data, "load", lambda path=None: reference)
    rows = [{"prompt": "Implement a function that sorts a linked list in Python.", "domain": "code"},
            {"prompt": "Solve for x: 3x + 5 = 20.", "domain": "math"},
            {"prompt": "What are the symptoms of type 2 diabetes?", "domain": "biomedical"},
            {"prompt": "Write a short poem about autumn.", "domain": "general"}]
    file = tmp_path / "eval.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "--data", str(file), "--checkpoint", str(small_checkpoint), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("n", "top1", "top3", "per_domain", "confusion", "latency_ms_p50_single", "throughput_qps_batched"):
        assert key in report
    for baseline in ("random", "majority", "keyword", "knn"):
        assert 0 <= report[baseline]["top1"] <= 1
    assert report["n"] == 4 and set(report["per_domain"]) == set(data.DOMAINS)


def test_cached_embeddings_equal_fresh_ones():
    from router.encoder import MiniLMEncoder

    encoder = MiniLMEncoder()
    texts = ["Write a Python function that reverses a list.", "What is 17 * 23?", ""]
    fresh = encoder.encode(texts)
    assert fresh.shape == (3, encoder.feature_dim) and fresh.norm(dim=1).allclose(torch.ones(3))
    assert encoder.encode_cached(texts).allclose(fresh, atol=1e-5)
    assert torch.equal(encoder.encode([texts[1]]), fresh[1:2])  # a prompt's vector does not depend on its batch
