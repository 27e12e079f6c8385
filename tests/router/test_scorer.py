"""Training converges on a small sample, the checkpoint round-trips, and `eval` prints the promised fields."""

import json
from pathlib import Path

import pytest
import torch

from router.training import data
from router.training.cli import main
from router.scorer import Scorer
from router.training.train import FitConfig, fit_head, role_targets, train


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
    scorer = Scorer.load(path)
    assert scorer.model_names == ["alpha", "beta"]
    train_info = scorer.meta["train"]
    assert train_info["outcome_validation_items"] == 6 and all(1 <= e <= 2 for e in train_info["epochs_kept"])
    assert train_info["model_sources"] == {"alpha": ["q.csv"], "beta": ["q.csv"]}
    assert scorer.calibration is not None and scorer.calibration.scale.shape == (2,)  # fitted on the 6 held-out rows
    assert scorer.blend is not None and scorer.blend.y.shape == (40, 2)  # the kNN and ridge keep every outcome row
    assert train_info["outcome_blend"]["knn_k"] >= 5 and train_info["outcome_blend"]["ridge_alpha"] > 0
    quality = scorer.predict(["What is 12 + 12?", "What is 7 + 7?"])[1]
    assert (quality[:, 1] > quality[:, 0]).all()  # beta was right on every row, alpha on half of them


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
    assert encoder.encode([texts[1]]).allclose(fresh[1:2], atol=1e-6)  # batch-mates change a vector only by rounding


def test_source_balance_evens_out_big_sources():
    from router.training.train import role_weights

    roles = torch.tensor([0] * 90 + [1] * 10 + [-1] * 5)
    groups = ["big"] * 90 + ["small"] * 10 + ["outcomes"] * 5
    weights = role_weights(roles, groups, FitConfig(source_balance=1.0))
    assert weights[:90].sum().item() == pytest.approx(weights[90:100].sum().item())
    assert weights[100:].eq(0).all() and weights[:100].mean().item() == pytest.approx(1.0)
    assert role_weights(roles, None, FitConfig())[:100].eq(1).all()  # no groups: unweighted


def test_ensemble_averages_member_probabilities_and_checkpoint_keeps_the_knn_reference(small_checkpoint):
    scorer = Scorer.load(small_checkpoint)
    assert len(scorer.head.members) == FitConfig().members and scorer.reference[0].shape == (1500, 384)
    x = scorer.encoder.encode(["Prove that the square root of 2 is irrational."])
    with torch.inference_mode():
        members = torch.stack([m(x)[0].softmax(-1) for m in scorer.head.members]).mean(0)
        assert scorer.head(x)[0].softmax(-1).allclose(members, atol=1e-6)
        scorer.reference = None  # without the reference the scorer is the head ensemble alone
        assert scorer.predict(["Prove that the square root of 2 is irrational."])[0].allclose(members, atol=1e-6)


def test_quality_eval_chooses_epochs_on_train_files_only(tmp_path):
    from router.training.quality_eval import quality_eval

    def csv(name: str, offset: int) -> object:
        path = tmp_path / f"{name}.csv"
        rows = [f"Question {offset + i} about {name}?,{i % 3 == 0},{i % 3 != 1}\n" for i in range(12)]
        path.write_text("prompt,mixtral-weak,gpt-4-strong\n" + "".join(rows))
        return path

    train_files = [csv(f"train{i}", 100 * i) for i in range(5)]
    test_files = [csv("test", 999)]
    report = quality_eval(train_files, test_files, "gpt-4", "mixtral", epoch_candidates=(1, 2))
    assert report["validation"]["files"] == ["train0.csv", "train4.csv"]
    apgr = report["validation"]["apgr_by_epochs"]
    assert set(apgr) == {1, 2} and report["epochs"] == max(apgr, key=lambda e: (apgr[e], -e))  # best; ties: fewer
    assert report["n"] == 12 and 0 <= report["cpt50"] <= 1
    assert set(report["subject_oracle"]) == {"apgr", "cpt50", "cpt80"}


def test_subject_oracle_scores_each_prompt_by_its_files_true_gain(tmp_path):
    from router.training.quality_eval import subject_oracle_scores

    gains = {"law": ("False", "True"), "math": ("True", "True")}  # (weak right, strong right) on every prompt
    files = []
    for name, (weak, strong) in gains.items():
        files.append(tmp_path / f"{name}.csv")
        files[-1].write_text("prompt,mixtral,gpt-4\n" + "".join(f"{name} question {i}?,{weak},{strong}\n" for i in range(3)))
    assert subject_oracle_scores(files, "gpt-4", "mixtral", {"math question 0?"}).tolist() == [1, 1, 1, 0, 0]


def test_a_cheaper_encoder_variant_gives_unit_vectors_and_a_checkpoint_for_the_full_one_refuses_it(small_checkpoint):
    from router.encoder import MiniLMEncoder

    variant = MiniLMEncoder(max_tokens=32, layers=2, quantized=True)  # what `cluster.bench.scorer` measures
    assert variant.info["features"] == "minilm-l2-mean-pooled-onnxruntime-int8-per-channel"
    vectors = variant.encode(["Write a Python function that reverses a list.", "What does the liver do?"])
    assert vectors.shape == (2, 384) and vectors.norm(dim=1).allclose(torch.ones(2), atol=1e-4)
    with pytest.raises(ValueError, match="trained for encoder"):
        Scorer.load(small_checkpoint, encoder=variant)


def test_a_role_finetuned_quality_eval_encoder_never_learns_from_the_test_files_sources():
    from router.training.quality_eval import sources_of_files

    sources = {"mmlu/professional law", "mmlu/professional medicine", "gsm8k", "humaneval"}
    held_out = sources_of_files([Path("x/mmlu_professional_law.csv"), Path("gsm8k_responses.csv")], sources)
    assert held_out == {"mmlu/professional law", "gsm8k"}
    with pytest.raises(ValueError, match="matches no dataset source"):
        sources_of_files([Path("arena_battles.csv")], sources)


def test_prepare_rebuilds_the_knn_reference_a_checkpoint_ships_without(small_checkpoint, capsys):
    """The checkpoint names its kNN rows instead of carrying their embeddings: without the built reference it refuses
    to load and names the command; `prepare` rebuilds the very same reference from the pinned dataset."""
    from router.scorer import read_checkpoint, reference_path

    blob = read_checkpoint(small_checkpoint)
    assert "x" not in blob["knn"] and blob["knn"]["rows"]["n"] == 1500
    built = reference_path(Scorer.load(small_checkpoint).encoder, blob["knn"]["rows"]["digest"])
    original = torch.load(built, weights_only=True)
    built.unlink()
    with pytest.raises(ValueError, match="python -m router prepare"):
        Scorer.load(small_checkpoint)
    assert main(["prepare", "--checkpoint", str(small_checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["built"] == [str(built)]
    rebuilt = torch.load(built, weights_only=True)
    assert torch.equal(rebuilt["x"], original["x"]) and torch.equal(rebuilt["roles"], original["roles"])
    assert Scorer.load(small_checkpoint).reference[0].shape == (1500, 384)


def test_train_writes_to_the_cache_unless_told_to_publish(monkeypatch, tmp_path):
    from router.training import train as training

    written = []
    monkeypatch.setattr(training, "train", lambda out, *a, **k: written.append(out) or Path(__file__))
    assert main(["train", "--json"]) == 0 and main(["train", "--publish", "--json"]) == 0
    from router.scorer import DEFAULT_CHECKPOINT

    assert written == [None, DEFAULT_CHECKPOINT]  # None: `train` picks .cache/router/checkpoints/<version>-<time>.pt
    assert training.draft_checkpoint_path("scorer-v1").parent == training.default_cache_dir() / "router" / "checkpoints"
