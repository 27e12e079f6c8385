"""The Router as serve/ uses it: any profile, traces, micro-batching, and the documented fallback."""

import asyncio
import json

import pytest
import torch

from router.policy import Load, Weights
from router.routing import MicroBatcher, Router


@pytest.fixture(scope="module")
def router(local_profile):
    return Router.from_profile(local_profile)  # the committed default checkpoint


def test_default_checkpoint_routes_by_role(router):
    assert router.scorer is not None, router.scorer_name
    assert router.decide("Write a Python function that merges two sorted lists.").winner == "qwen-coder-1.5b"
    assert router.decide("What is the capital of France?").winner == "smollm2-135m"


def test_trace_is_json_and_explains_the_choice(router):
    decision = router.decide("Solve 12x - 7 = 29 for x.", Weights(), {"qwen-coder-1.5b": Load(in_flight=2)})
    trace = json.loads(json.dumps(decision.trace))
    assert trace["winner"] == decision.winner == decision.ranked[0]
    assert trace["scorer"].startswith("mlp:scorer-v1")
    assert set(trace["specialists"]) == set(router.profile.names)
    assert trace["specialists"]["qwen-coder-1.5b"]["load"]["in_flight"] == 2
    assert {"quality", "cost", "expected_latency_s", "utility"} <= set(trace["specialists"]["smollm2-135m"])


def test_any_profile_works_through_roles(tiny_profile):
    decision = Router.from_profile(tiny_profile).decide("Implement quicksort in C++.")
    assert decision.winner == "tiny-coder" and sorted(decision.ranked) == sorted(tiny_profile.names)


def test_missing_checkpoint_falls_back_to_keywords_and_says_so(tiny_profile, tmp_path):
    router = Router.from_profile(tiny_profile, tmp_path / "absent.pt")
    decision = router.decide("Fix the bug in this Python function")
    assert decision.trace["scorer"].startswith("keyword-fallback") and decision.winner == "tiny-coder"


def test_a_prompt_scores_the_same_alone_or_batched_with_other_requests(router):
    """The ingress scores concurrent requests in one call; the int8 encoder's activation scale spans a call, so unless
    it encodes prompt by prompt, a request's route would depend on whatever arrived with it."""
    prompts = ["What is a linked list?", "Why do my ears pop when a plane takes off?",
               "Solve for x: 3x + 5 = 20. Show each step, then check the answer by substituting it back. " * 4, ""]
    vectors = router.scorer.encoder.encode(prompts)
    roles, _ = router.predict(prompts)
    for i, prompt in enumerate(prompts):
        assert torch.equal(vectors[i], router.scorer.encoder.encode([prompt])[0]), prompt
        assert roles[i].allclose(router.predict([prompt])[0][0], atol=1e-6), prompt  # the heads' float rounding only


def test_concurrent_calls_share_one_scorer_call(router):
    calls = []

    def predict(texts):
        calls.append(len(texts))
        return router.predict(texts)

    batcher = MicroBatcher(predict)

    async def many():
        return await asyncio.gather(*(batcher.submit(f"question {i}") for i in range(20)))

    results = asyncio.run(many())
    assert len(results) == 20 and calls == [20]


def test_adecide_matches_decide(router):
    prompt = "Which nerve innervates the diaphragm?"
    assert asyncio.run(router.adecide(prompt)).ranked == router.decide(prompt).ranked


@pytest.mark.parametrize("breakage", ["corrupt file", "import error", "unprepared reference"])
def test_a_scorer_that_fails_to_load_for_any_reason_falls_back_to_keywords_and_says_why(tiny_profile, tmp_path,
                                                                                      monkeypatch, breakage):
    from router import scorer

    checkpoint = scorer.DEFAULT_CHECKPOINT
    if breakage == "corrupt file":
        checkpoint = tmp_path / "corrupt.pt"
        checkpoint.write_bytes(b"not a torch file")
    elif breakage == "import error":
        def missing_package(*_, **__):
            raise ImportError("No module named 'onnxruntime'")
        monkeypatch.setattr(scorer, "checkpoint_encoder", missing_package)
    else:
        monkeypatch.setenv("SPECIALISTS_CACHE", str(tmp_path))  # a machine where `router prepare` never ran
    router = Router.from_profile(tiny_profile, checkpoint)
    status = router.scorer_status
    assert status["fallback"] is True and status["name"] == "keyword-fallback" and str(checkpoint) in status["reason"]
    expected = {"corrupt file": "UnpicklingError", "import error": "onnxruntime", "unprepared reference": "router prepare"}
    assert expected[breakage] in status["reason"]
    decision = router.decide("Fix the bug in this Python function")
    assert decision.trace["scorer"] == f"keyword-fallback ({status['reason']})" and decision.winner == "tiny-coder"
    monkeypatch.undo()  # the same profile with the shipped checkpoint, intact and prepared: the trained scorer
    assert Router.from_profile(tiny_profile).scorer_status == {"name": "mlp:scorer-v1", "fallback": False}


def test_each_specialists_quality_source_is_in_the_trace(router):
    """The shipped checkpoint is role-only: every `local` specialist's quality is its role prior, and the trace says so."""
    trace = router.decide("Solve 12x - 7 = 29 for x.").trace
    assert trace["quality_from"] == {"qwen-coder-1.5b": "role prior (coder)", "qwen-coder-0.5b": "role prior (math)",
                                     "smollm2-135m": "role prior (general, biomedical)"}


@pytest.fixture(scope="module")
def outcome_checkpoint(tmp_path_factory):
    """A scorer whose per-model heads learnt from an LLMRouter-style file naming models as an operator's evals do."""
    from router.training.train import FitConfig, train

    folder = tmp_path_factory.mktemp("outcomes")
    rows = [{"question": f"Write a Python function number {i} that sorts a list.", "scores": {"coder-7b": 1.0, "chat-1b": 0.0}}
            for i in range(30)] + [{"question": f"Say hello to guest number {i}.", "scores": {"coder-7b": 0.0, "chat-1b": 1.0}}
                                   for i in range(30)]
    (folder / "evals.json").write_text(json.dumps(rows))
    return train(folder / "s.pt", [folder / "evals.json"], FitConfig(epochs=8, hidden=32, members=1), limit=300)


def test_a_catalog_mapping_sends_a_specialist_to_its_models_head(tiny_profile, outcome_checkpoint):
    mapped = tiny_profile.model_copy(update={"specialists": [
        s.model_copy(update={"quality_head": "coder-7b" if s.name == "tiny-coder" else "chat-1b"})
        for s in tiny_profile.specialists]})
    router = Router.from_profile(mapped, outcome_checkpoint)
    assert router.quality_from == {"tiny-coder": "head coder-7b (evals.json)", "tiny-general": "head chat-1b (evals.json)"}
    roles, models = router.predict(["Write a Python function number 99 that sorts a list."])
    quality = router.specialist_quality(roles[0], models[0])
    assert quality["tiny-coder"] > 0.5 > quality["tiny-general"]
    unmapped = Router.from_profile(tiny_profile, outcome_checkpoint)  # names differ, no mapping: the role prior
    assert unmapped.quality_from == {"tiny-coder": "role prior (coder, math)", "tiny-general": "role prior (general, biomedical)"}


def test_a_specialist_mapped_to_a_head_the_checkpoint_lacks_is_refused_by_name(tiny_profile, outcome_checkpoint):
    from router.catalog import CatalogError

    typo = tiny_profile.model_copy(update={"specialists": [
        tiny_profile.specialists[0].model_copy(update={"quality_head": "coder-7B"}), *tiny_profile.specialists[1:]]})
    with pytest.raises(CatalogError, match=r"tiny-coder.*coder-7B.*its heads: \['coder-7b', 'chat-1b'\]"):
        Router.from_profile(typo, outcome_checkpoint)
