"""Ensemble logic on recorded replies: judging, fusion, answer keys, request specs, the token budget, and every mode's
calls, early stop, deadline and trace, driven through a fake caller (the engines' side is tested on `tiny`)."""

import asyncio
import math

import pytest

from router.catalog import Ensemble
from router.ensemble import modes, spec
from router.ensemble.answers import answer_key
from router.ensemble.budget import TokenBudget, prompt_bound
from router.ensemble.calls import Call, Reply
from router.ensemble.judging import fuse, json_score, self_score, yes_probability

QUESTION = [{"role": "user", "content": "What is 6 * 7?"}]
RANKED = ["coder", "math", "general"]
QUALITY = {"coder": 0.9, "math": 0.8, "general": 0.3}


# --- judging and answers, on outputs recorded from small models ----------------------------------------------------


def test_self_score_is_the_geometric_mean_token_probability():
    assert self_score(math.log(0.8)) == pytest.approx(0.8) and self_score(None) == 0.5


def test_yes_probability_reads_every_spelling_of_yes_and_no_among_the_top_logprobs():
    recorded = {" Yes": math.log(0.6), "Yes": math.log(0.1), " No": math.log(0.2), "The": math.log(0.05)}
    assert yes_probability(recorded) == pytest.approx(0.7 / 0.9)
    assert yes_probability({"Maybe": -0.1}) == 0.5 and yes_probability(None) == 0.5


@pytest.mark.parametrize("text, score", [('{"score": 8}', 0.8), ('Sure! {"score": 0.3}', 0.3), ("I give it 9/10", 0.5),
                                         ('{"score": "ten"} {"score": 10}', 1.0), ('{"score": 42}', 1.0)])
def test_json_scores_parse_or_fall_back_to_neutral(text, score):
    assert json_score(text) == pytest.approx(score)


def test_fusion_is_the_weighted_mean_of_the_scores_present():
    assert fuse(0.9, 0.3, None, (2, 1, 1)) == pytest.approx((1.8 + 0.3) / 3)
    assert fuse(0.9, 0.3, 0.6, (2, 1, 1)) == pytest.approx((1.8 + 0.3 + 0.6) / 4)


@pytest.mark.parametrize("a, b", [("The answer is 42.", "6*7 = 42, so #### 42"), ("Answer: (B) Paris", "answer is B"),
                                  ("```python\ndef f(x):\n    return x\n```", "Here:\n```python\ndef f(x):  return x\n```")])
def test_answers_that_agree_share_a_key(a, b):
    assert answer_key(a) == answer_key(b)


def test_answers_that_differ_do_not():
    assert answer_key("The answer is 42.") != answer_key("The answer is 41.")
    assert answer_key("Answer: A") != answer_key("Answer: B")


# --- what a request may ask for ------------------------------------------------------------------------------------


def test_a_spec_fills_the_profile_defaults_and_a_virtual_model_names_its_mode():
    config = Ensemble(proposers=2, proposer_max_tokens=64)
    assert spec.mode_of_model(spec.virtual_model("self_moa")) == "self_moa" == spec.mode_of_model("ensemble-self-moa")
    parsed = spec.parse(None, "vote", config, 3)
    assert (parsed.mode, parsed.proposers, parsed.max_tokens, parsed.token_budget) == ("vote", 2, 64, None)
    assert spec.parse({"mode": "moa"}, None, config, 3).proposers == 3  # every specialist proposes


@pytest.mark.parametrize("raw, model_mode, reason", [
    ({"mode": "debate"}, None, "must be one of"),
    ({}, None, "must be one of"),
    ({"mode": "routemoa", "proposers": 4}, None, "from 1 to 3"),
    ({"mode": "vote", "proposers": 0}, None, "from 1 to 4"),
    ({"mode": "vote", "max_tokens": 10_000}, None, "max_tokens must be an integer from 1 to 256"),
    ({"mode": "vote", "token_budget": True}, None, "token_budget"),
    ({"mode": "moa", "layers": 9}, None, "layers"),
    ({"mode": "vote"}, "moa", "disagree"),
    ({"mode": "vote", "k": 3}, None, "unknown field"),
    ({"mode": "vote", "assessment": "vibes"}, None, "assessment"),
    ({"mode": "routemoa", "score_gap": 1.5}, None, "score_gap must be a number from 0 to 1"),
    ({"mode": "routemoa", "early_stop": "high"}, None, "early_stop must be a number from 0 to 1"),
    ("vote", None, "must be an object"),
])
def test_a_bad_ensemble_request_is_refused_with_the_reason(raw, model_mode, reason):
    with pytest.raises(ValueError, match=reason):
        spec.parse(raw, model_mode, Ensemble(), 3)


def test_a_mode_the_profile_does_not_enable_is_refused():
    with pytest.raises(ValueError, match="not enabled"):
        spec.parse({"mode": "moa"}, None, Ensemble(modes=["vote"]), 3)


def test_the_budget_bounds_each_call_before_it_is_sent():
    budget = TokenBudget(1000)
    bound = prompt_bound(QUESTION)
    assert bound >= len("What is 6 * 7?") and budget.max_tokens(QUESTION, 5000) == 1000 - bound
    budget.reserve(QUESTION, 100)
    assert budget.max_tokens(QUESTION, 5000) == 1000 - 2 * bound - 100
    budget.settle(QUESTION, 100, 30)  # it used 30 tokens in all
    assert budget.spent == 30 and TokenBudget(None).max_tokens(QUESTION, 77) == 77


# --- the modes, through a fake caller -----------------------------------------------------------------------------


class FakeCaller:
    """Answers like a small model would, per model: its text, a mean logprob, a Yes/No verdict; records every call."""

    def __init__(self, texts=None, confidence=None, verdicts=None, delay=None):
        self.texts = texts or {"coder": "The answer is 42.", "math": "The answer is 42.", "general": "The answer is 41."}
        self.confidence = confidence or {"coder": 0.5, "math": 0.5, "general": 0.5}
        self.verdicts = verdicts or {}  # judged text -> P(Yes)
        self.delay = delay or {}
        self.calls: list[Call] = []
        self.cancelled: list[str] = []

    async def __call__(self, call: Call) -> Reply:
        self.calls.append(call)
        try:
            await asyncio.sleep(self.delay.get(call.model, 0))
        except asyncio.CancelledError:
            self.cancelled.append(call.model)
            raise
        if call.top_logprobs:  # a verdict on the answer in the last assistant turn
            p = self.verdicts.get(call.messages[-2]["content"], 0.5)
            return Reply(call.model, "Yes", 30, 1, 0.01, "length", None, {"Yes": math.log(p), "No": math.log(1 - p)})
        text = self.texts[call.model]
        if call.messages[0]["role"] == "system" and "Answers:" in call.messages[0]["content"]:
            text = f"Aggregated: {text}"
        tokens = min(call.max_tokens, 8)
        return Reply(call.model, text, 20, tokens, 0.01, "stop", math.log(self.confidence[call.model]))


def plan(mode, **overrides):
    fields = ("proposers", "layers", "token_budget", "assessment", "score_gap", "early_stop")
    raw = {"mode": mode, **{k: overrides.pop(k) for k in fields if k in overrides}}
    fields = dict(spec=spec.parse(raw, None, Ensemble(proposer_max_tokens=64), 3), messages=QUESTION, ranked=RANKED,
                  quality=QUALITY, aggregator="coder", final_max_tokens=128, temperature=0.0, sample_temperature=0.7,
                  weights=(2.0, 1.0, 1.0), deadline_s=30.0)
    return modes.Plan(**{**fields, **overrides})


def run(p, caller):
    return asyncio.run(modes.run(p, caller))


def test_routemoa_screens_by_the_scorer_and_stops_early_on_a_confident_answer():
    caller = FakeCaller(confidence={"coder": 0.95, "math": 0.5, "general": 0.5})
    outcome = run(plan("routemoa"), caller)
    assert [c.model for c in caller.calls] == ["coder", "math"]  # general is more than 0.2 below the best: screened out
    assert all(c.logprobs and c.max_tokens == 64 for c in caller.calls)
    assert outcome.final is None and outcome.answer.model == "coder" and outcome.trace["early_stop"] is True
    assert outcome.trace["screen"]["kept"] == ["coder", "math"] and [s["name"] for s in outcome.trace["stages"]] == ["propose"]
    assert outcome.trace["stages"][0]["calls"][0]["score"] == pytest.approx((2 * 0.9 + 0.95) / 3, abs=1e-4)


def test_routemoa_without_a_confident_answer_cross_assesses_and_aggregates_the_best():
    caller = FakeCaller(texts={"coder": "The answer is 41.", "math": "The answer is 42.", "general": "-"},
                        verdicts={"The answer is 42.": 0.9, "The answer is 41.": 0.1})
    outcome = run(plan("routemoa"), caller)
    verdicts = [c for c in caller.calls if c.top_logprobs]
    assert len(verdicts) == 2 and all(c.max_tokens == 1 for c in verdicts)  # k (k - 1) one-token verdicts
    fused = outcome.trace["stages"][1]["fused"]
    assert fused["math"] > fused["coder"] and outcome.trace["early_stop"] is False
    final = outcome.final
    assert final.model == "coder" and final.max_tokens == 128  # the aggregator writes at the client's max_tokens
    references = final.messages[0]["content"]
    assert references.index("42.") < references.index("41.")  # the better-fused answer first
    assert outcome.trace["calls"] == 4 and outcome.trace["final"] == {"model": "coder", "kind": "aggregate"}


def test_routemoa_returns_a_lone_screened_proposal_without_aggregating_it():
    caller = FakeCaller(confidence={"coder": 0.1, "math": 0.5, "general": 0.5})
    outcome = run(plan("routemoa", quality={"coder": 0.9, "math": 0.5, "general": 0.3}), caller)
    assert [c.model for c in caller.calls] == ["coder"] and outcome.trace["screen"]["kept"] == ["coder"]
    assert outcome.answer.model == "coder" and outcome.trace["early_stop"] is False and outcome.final is None


def test_the_screen_keeps_near_best_specialists_that_cost_or_load_ranked_below_a_far_worse_one():
    quality = {"cheap": 0.2, "strong": 0.9, "close": 0.85}
    assert modes.near_best(["cheap", "strong", "close"], quality, 0.1, 2) == ["strong", "close"]
    assert modes.near_best(["cheap", "strong", "close"], quality, 1.0, 2) == ["cheap", "strong"]  # at most k, by ranking


def test_a_request_sets_routemoas_thresholds_within_the_profiles_bounds():
    assert (spec.parse({"mode": "routemoa"}, None, Ensemble(score_gap=0.3), 3).score_gap, plan("routemoa").spec.early_stop) == (0.3, 0.8)
    caller = FakeCaller(confidence={"coder": 0.95, "math": 0.5, "general": 0.5})
    outcome = run(plan("routemoa", score_gap=1, early_stop=1), caller)  # keep all three, never stop early
    assert outcome.trace["screen"]["kept"] == ["coder", "math", "general"] and outcome.trace["early_stop"] is False


def test_routemoa_can_judge_with_the_papers_json_scores():
    caller = FakeCaller()
    run(plan("routemoa", assessment="json"), caller)
    verdicts = [c for c in caller.calls if "JSON" in c.messages[-1]["content"]]
    assert len(verdicts) == 2 and all(c.top_logprobs == 0 and c.max_tokens == 16 for c in verdicts)


def test_moa_runs_every_layer_over_every_specialist_then_aggregates():
    caller = FakeCaller()
    outcome = run(plan("moa", layers=2), caller)
    assert [s["name"] for s in outcome.trace["stages"]] == ["layer-1", "layer-2"] and len(caller.calls) == 6
    assert all("Answers:" in c.messages[0]["content"] for c in caller.calls[3:])  # layer 2 sees layer 1's answers
    assert outcome.final.model == "coder" and "Answers:" in outcome.final.messages[0]["content"]


def test_self_moa_samples_the_top_specialist_with_seeds_then_it_aggregates():
    caller = FakeCaller()
    outcome = run(plan("self_moa", proposers=3), caller)
    assert [(c.model, c.seed, c.temperature) for c in caller.calls] == [("coder", i, 0.7) for i in (1, 2, 3)]
    assert outcome.final.model == "coder"


def test_vote_returns_the_majority_answer_unchanged_without_another_call():
    caller = FakeCaller(texts={"coder": "The answer is 41.", "math": "So 6*7 = 42. #### 42", "general": "The answer is 42."})
    outcome = run(plan("vote", proposers=3), caller)
    assert outcome.final is None and outcome.answer.model == "math" and outcome.trace["votes"] == 2
    assert len(caller.calls) == 3


def test_more_voters_than_specialists_repeat_the_ranking_as_seeded_samples():
    caller = FakeCaller()
    run(plan("vote", proposers=4), caller)
    assert [(c.model, c.seed) for c in caller.calls] == [("coder", None), ("math", None), ("general", None), ("coder", 1)]


def test_best_of_n_returns_the_answer_the_judge_likes_best():
    caller = FakeCaller(verdicts={"The answer is 41.": 0.95, "The answer is 42.": 0.2})
    outcome = run(plan("best_of_n", proposers=3), caller)
    assert outcome.answer.model == "general" and {c.model for c in caller.calls if c.top_logprobs} == {"coder"}


def test_refine_drafts_critiques_and_streams_the_revision():
    caller = FakeCaller()
    outcome = run(plan("refine"), caller)
    assert [s["name"] for s in outcome.trace["stages"]] == ["answer", "critique"]
    assert outcome.final.model == "coder" and "reviewer" in outcome.final.messages[-1]["content"]


def test_at_the_deadline_slow_proposers_are_cancelled_and_the_rest_go_on():
    caller = FakeCaller(delay={"math": 5.0})
    outcome = run(plan("moa", deadline_s=0.5), caller)  # stages may use 60 % of it: 0.3 s
    assert caller.cancelled == ["math"]
    rows = outcome.trace["stages"][0]["calls"]
    assert [r["status"] for r in rows] == ["ok", "cancelled: deadline", "ok"] and outcome.final is not None


def test_when_nothing_answers_in_time_the_top_specialist_answers_alone():
    caller = FakeCaller(delay={name: 5.0 for name in RANKED})
    outcome = run(plan("vote", proposers=3, deadline_s=0.2), caller)
    assert outcome.final.model == "coder" and outcome.trace["fallback"] == "no proposer answered"


def test_every_call_fits_the_token_budget_and_a_budget_too_small_for_any_answer_is_refused():
    caller = FakeCaller()
    budget = 3 * prompt_bound(QUESTION) + 20
    outcome = run(plan("moa", token_budget=budget), caller)
    planned = sum(prompt_bound(c.messages) + c.max_tokens for c in caller.calls)
    if outcome.final is not None:
        planned += prompt_bound(outcome.final.messages) + outcome.final.max_tokens
    assert planned <= budget and any(r["status"] == "skipped: token budget" for r in outcome.trace["stages"][0]["calls"])
    with pytest.raises(modes.BudgetExhausted, match="does not cover"):
        run(plan("vote", token_budget=10), FakeCaller())


def test_an_ensemble_degrades_to_one_call_when_its_specialists_are_saturated():
    from router.policy import Load

    idle = {"coder": Load(in_flight=1, slots_per_replica=4), "math": Load(in_flight=0, slots_per_replica=4)}
    busy = {"coder": Load(in_flight=8, slots_per_replica=4), "math": Load(serve_ongoing=3, serve_queued=1, slots_per_replica=4)}
    assert modes.degrade_reason(idle, 1.0) is None
    assert modes.degrade_reason(busy, 1.0).startswith("load: mean utilisation 1.50 >= 1")
