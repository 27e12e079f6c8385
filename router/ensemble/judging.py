"""Scores small models can give reliably: no JSON to parse unless asked for.

- self-assessment: exp(mean token logprob) of a proposer's own answer, which vLLM returns with the answer;
- cross-assessment: a peer's one-token Yes/No verdict on an answer, read as P(Yes) from the first token's top
  logprobs (renormalised over the Yes and No spellings it saw);
- the paper's JSON scores (`{"score": 0-10}`) as an option for models that follow the format.
Fusion is RouteMoA's weighted mean of the scorer's prediction, the self and the cross scores.
"""

from __future__ import annotations

import json
import math
import re

from router.ensemble import prompts
from router.ensemble.calls import Call

YES = ("yes", "y")
NO = ("no", "n")
NEUTRAL = 0.5  # a verdict that could not be read: neither for nor against
JSON_SCORE = re.compile(r"\{[^{}]*\}")
VERDICT_TOP_LOGPROBS = 5  # alternatives read for a Yes/No verdict
JSON_VERDICT_TOKENS = 16


def verdict_call(judge: str, messages: list[dict], answer: str, as_json: bool = False) -> Call:
    """A judge's call on one answer (an ensemble's cross-assessment, the online quality monitor's grading)."""
    return Call(judge, prompts.verdict(messages, answer, as_json), JSON_VERDICT_TOKENS if as_json else 1, 0.0,
                top_logprobs=0 if as_json else VERDICT_TOP_LOGPROBS)


def self_score(mean_logprob: float | None) -> float:
    """A proposer's confidence in its own answer: the geometric mean of its tokens' probabilities."""
    return NEUTRAL if mean_logprob is None else math.exp(max(mean_logprob, -50.0))


def yes_probability(first_token_top: dict[str, float] | None) -> float:
    """P(Yes) from the first generated token's top logprobs: Yes / (Yes + No) over every spelling of each."""
    if not first_token_top:
        return NEUTRAL
    yes = sum(math.exp(lp) for token, lp in first_token_top.items() if token.strip().lower() in YES)
    no = sum(math.exp(lp) for token, lp in first_token_top.items() if token.strip().lower() in NO)
    return yes / (yes + no) if yes + no > 0 else NEUTRAL


def json_score(text: str) -> float:
    """The paper's style: the last JSON object with a numeric `score` on 0-10 (or 0-1), as 0-1; NEUTRAL if none."""
    for candidate in reversed(JSON_SCORE.findall(text)):
        try:
            value = float(json.loads(candidate)["score"])
        except (ValueError, KeyError, TypeError):
            continue
        return min(1.0, max(0.0, value / 10 if value > 1 else value))
    return NEUTRAL


def fuse(scorer: float, self_: float, cross: float | None, weights: tuple[float, float, float]) -> float:
    """Weighted mean of the scores present (cross is absent before round 2)."""
    terms = [(scorer, weights[0]), (self_, weights[1])] + ([(cross, weights[2])] if cross is not None else [])
    total = sum(w for _, w in terms)
    return sum(v * w for v, w in terms) / total if total else 0.0
