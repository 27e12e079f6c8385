"""The ensemble modes, one class each with one `run` method, over a shared `Run` that makes the calls.

Every mode ends in an `Outcome`: either the final call (an aggregator, a revision), which serve/ sends through the
normal dispatch path so that it can stream, or an answer already written (a vote, a judge's pick, an early stop),
returned unchanged. Non-final stages must finish by STAGES_SHARE of the deadline: what has not finished then is
cancelled (the engine stops generating) and the mode goes on with what did.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from router.ensemble import prompts
from router.ensemble.answers import answer_key
from router.ensemble.budget import TokenBudget
from router.ensemble.calls import Call, Caller, Reply
from router.ensemble.judging import fuse, json_score, self_score, verdict_call, yes_probability
from router.ensemble.spec import EnsembleSpec
from router.policy import Load

STAGES_SHARE = 0.6  # of the deadline for every stage before the final one; the rest is the final call's


class BudgetExhausted(ValueError):
    """The request's token budget leaves no room for an answer: the client's cap, so a 400 that says so."""


@dataclass
class Plan:
    """Everything a mode needs to know about the request and the router's view of the specialists."""

    spec: EnsembleSpec
    messages: list[dict]
    ranked: list[str]  # the `auto` ranking (quality, cost, live load), best first
    quality: dict[str, float]  # the scorer's predicted quality per specialist
    aggregator: str
    final_max_tokens: int
    temperature: float  # the client's, for the final answer and deterministic proposals
    sample_temperature: float  # for repeated samples of one model
    weights: tuple[float, float, float]  # fusion: scorer, self, cross
    deadline_s: float


@dataclass
class Outcome:
    final: Call | None
    answer: Reply | None
    trace: dict


@dataclass
class Run:
    """Makes a mode's calls: concurrently per stage, within the token budget and the stages' share of the deadline,
    recording each stage for the trace and telling `progress` as stages start and end."""

    plan: Plan
    caller: Caller
    progress: Callable[[str], None] = lambda _: None
    started: float = field(default_factory=time.monotonic)
    stages: list[dict] = field(default_factory=list)
    usage: Counter = field(default_factory=Counter)
    calls: int = 0

    def __post_init__(self) -> None:
        self.budget = TokenBudget(self.plan.spec.token_budget)
        self.stages_end = self.started + self.plan.deadline_s * STAGES_SHARE

    @property
    def spec(self) -> EnsembleSpec:
        return self.plan.spec

    async def stage(self, name: str, calls: list[Call]) -> list[Reply | None]:
        """Run `calls` at once; a call that does not fit the budget is skipped, one that fails or misses the stages'
        deadline is None in the result (a cancelled call keeps its reservation: its usage is unknown)."""
        self.progress(f"{name}: {len(calls)} call(s)")
        began = time.monotonic()
        fitted = [self._fit(call) for call in calls]
        tasks = {i: asyncio.ensure_future(self._call(call)) for i, call in enumerate(fitted) if call is not None}
        try:
            _, pending = await asyncio.wait(tasks.values(), timeout=max(0.0, self.stages_end - time.monotonic())) if tasks else (set(), set())
        except asyncio.CancelledError:  # the request went away: no engine keeps generating for it
            pending = set(tasks.values())
            raise
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        rows, replies = [], []
        for i, call in enumerate(fitted):
            reply, row = self._outcome(calls[i], call, tasks.get(i), pending)
            rows.append(row)
            replies.append(reply)
        self.stages.append({"name": name, "seconds": round(time.monotonic() - began, 3), "calls": rows})
        self.progress(f"{name}: {sum(r is not None for r in replies)} of {len(calls)} answered")
        return replies

    def _fit(self, call: Call) -> Call | None:
        max_tokens = self.budget.max_tokens(call.messages, call.max_tokens)
        if max_tokens < 1:
            return None
        fitted = Call(**{**call.__dict__, "max_tokens": max_tokens})
        self.budget.reserve(fitted.messages, fitted.max_tokens)
        return fitted

    async def _call(self, call: Call) -> Reply:
        self.calls += 1
        reply = await self.caller(call)
        self.budget.settle(call.messages, call.max_tokens, reply.prompt_tokens + reply.completion_tokens)
        self.usage.update(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        return reply

    @staticmethod
    def _outcome(asked: Call, fitted: Call | None, task: asyncio.Future | None, pending: set) -> tuple[Reply | None, dict]:
        row: dict = {"model": asked.model}
        if fitted is None:
            return None, {**row, "status": "skipped: token budget"}
        if task in pending:
            return None, {**row, "status": "cancelled: deadline"}
        if task.exception() is not None:
            return None, {**row, "status": f"error: {task.exception()}"}
        reply = task.result()
        return reply, {**row, "status": "ok", "prompt_tokens": reply.prompt_tokens,
                       "completion_tokens": reply.completion_tokens, "seconds": round(reply.seconds, 3)}

    def final_call(self, model: str, messages: list[dict]) -> Call | None:
        """The call that writes the answer, cut to the budget; None when not even one answer token fits."""
        max_tokens = self.budget.max_tokens(messages, self.plan.final_max_tokens)
        return Call(model, messages, max_tokens, self.plan.temperature) if max_tokens >= 1 else None

    def proposal(self, model: str, messages: list[dict], sample: int | None = None, logprobs: bool = False) -> Call:
        """A non-final call: at the proposers' max_tokens; a repeated sample of a model gets its own seed."""
        temperature = self.plan.sample_temperature if sample else self.plan.temperature
        return Call(model, messages, min(self.spec.max_tokens, self.plan.final_max_tokens), temperature,
                    seed=sample, logprobs=logprobs)

    def verdicts(self, judge_answer_pairs: list[tuple[str, str]]) -> list[Call]:
        """One verdict call per (judge, answer): a one-token Yes/No, or the paper's JSON score."""
        return [verdict_call(judge, self.plan.messages, answer, self.spec.assessment == "json")
                for judge, answer in judge_answer_pairs]

    def verdict_scores(self, replies: list[Reply | None]) -> list[float | None]:
        """Each verdict read as a 0-1 score (None: no verdict), also written on its row of the last stage."""
        as_json = self.spec.assessment == "json"
        scores = [None if reply is None else json_score(reply.text) if as_json else yes_probability(reply.first_token_top)
                  for reply in replies]
        self.annotate_rows(scores)
        return scores

    def annotate(self, scores: dict[str, float]) -> None:
        """Write each model's score on its row of the last stage."""
        for row in self.stages[-1]["calls"]:
            if row["model"] in scores:
                row["score"] = round(scores[row["model"]], 4)

    def annotate_rows(self, scores: list[float | None]) -> None:
        for row, score in zip(self.stages[-1]["calls"], scores):
            if score is not None:
                row["score"] = round(score, 4)

    def outcome(self, kind: str, model: str, final: Call | None = None, answer: Reply | None = None, **extra) -> Outcome:
        prompt, completion = self.usage["prompt_tokens"], self.usage["completion_tokens"]
        trace = {"mode": self.spec.mode, **extra, "stages": self.stages, "calls": self.calls,
                 "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
                 "final": {"model": model, "kind": kind}}
        return Outcome(final, answer, trace)

    def aggregate_or_best(self, aggregator: str, answers: list[Reply], **extra) -> Outcome:
        """The aggregator over `answers`; if the budget leaves it no room, the first answer unchanged."""
        final = self.final_call(aggregator, prompts.aggregate(self.plan.messages, [a.text for a in answers]))
        if final is not None:
            return self.outcome("aggregate", aggregator, final=final, **extra)
        return self.outcome("select", answers[0].model, answer=answers[0], budget_exhausted=True, **extra)

    def fall_back(self, reason: str, **extra) -> Outcome:
        """No stage produced anything usable: the top specialist answers alone, as a single request would."""
        top = self.plan.ranked[0]
        final = self.final_call(top, self.plan.messages)
        if final is None:
            raise BudgetExhausted(f"router.ensemble.token_budget {self.spec.token_budget} was spent before any answer "
                                  f"({reason}); raise it or ask for fewer proposers")
        return self.outcome("single", top, final=final, fallback=reason, **extra)


def degrade_reason(loads: dict[str, Load], limit: float) -> str | None:
    """Why an ensemble over these specialists should be one call now: their mean utilisation (requests ahead over
    batch slots) at or past the profile's limit, when the extra calls would only queue."""
    utilisation = sum(load.pending / (max(1, load.replicas) * max(1, load.slots_per_replica)) for load in loads.values())
    utilisation /= max(1, len(loads))
    return f"load: mean utilisation {utilisation:.2f} >= {limit:g} over {sorted(loads)}" if utilisation >= limit else None


def complete(reply: Reply, plan: Plan) -> bool:
    """An answer that may go back unchanged: it ended by itself, or at the client's own max_tokens."""
    return reply.finish_reason != "length" or reply.completion_tokens >= plan.final_max_tokens


def near_best(ranked: list[str], quality: dict[str, float], gap: float, most: int) -> list[str]:
    """RouteMoA's screen: in ranking order, the first `most` whose predicted quality is within `gap` of the best.
    Filtering before cutting keeps a near-best specialist that cost or load ranked below a far-worse one."""
    best = max(quality[name] for name in ranked)
    return [name for name in ranked if quality[name] >= best - gap][:most]


def screen(plan: Plan) -> list[str]:
    """The plan's specialists that routemoa asks, by its ranking, quality and settings."""
    return near_best(plan.ranked, plan.quality, plan.spec.score_gap, plan.spec.proposers)


def proposers(plan: Plan) -> list[tuple[str, int | None]]:
    """The top-n specialists by ranking; past the last one, the ranking again as seeded samples."""
    n, ranked = plan.spec.proposers, plan.ranked
    return [(ranked[i % len(ranked)], i // len(ranked) or None) for i in range(n)]


class RouteMoA:
    """Screen by the scorer, answer with self-assessment, stop early when a fused score clears the threshold,
    else cross-assess with Yes/No verdicts and aggregate the answers that stay near the best."""

    async def run(self, r: Run) -> Outcome:
        plan = r.plan
        kept = screen(plan)
        scores = {name: round(plan.quality[name], 4) for name in plan.ranked}
        screened = {"screen": {"scores": scores, "kept": kept}}
        replies = await r.stage("propose", [r.proposal(name, plan.messages, logprobs=True) for name in kept])
        answered = [(name, reply) for name, reply in zip(kept, replies) if reply is not None]
        if not answered:
            return r.fall_back("no proposer answered", early_stop=False, **screened)
        fused = {name: fuse(plan.quality[name], self_score(reply.mean_logprob), None, plan.weights) for name, reply in answered}
        r.annotate(fused)
        best, best_reply = max(answered, key=lambda pair: fused[pair[0]])
        if fused[best] >= plan.spec.early_stop and complete(best_reply, plan):
            return r.outcome("select", best, answer=best_reply, early_stop=True, **screened)
        if len(answered) == 1 and complete(best_reply, plan):  # nobody to cross-check it with: aggregating one answer adds
            return r.outcome("select", best, answer=best_reply, early_stop=False, **screened)  # a call and nothing else
        if len(answered) > 1:
            fused = await self._cross(r, answered)
            best, best_reply = max(answered, key=lambda pair: fused[pair[0]])
            if fused[best] >= plan.spec.early_stop and complete(best_reply, plan):
                return r.outcome("select", best, answer=best_reply, early_stop=True, **screened)
        references = sorted((pair for pair in answered if fused[pair[0]] >= fused[best] - plan.spec.score_gap),
                            key=lambda pair: -fused[pair[0]])
        return r.aggregate_or_best(plan.aggregator, [reply for _, reply in references], early_stop=False, **screened)

    @staticmethod
    async def _cross(r: Run, answered: list[tuple[str, Reply]]) -> dict[str, float]:
        """Each proposer judges every peer's answer; an answer's cross score is its judges' mean P(Yes)."""
        pairs = [(judge, name) for judge, _ in answered for name, _ in answered if judge != name]
        texts = dict(answered)
        verdicts = await r.stage("cross-assess", r.verdicts([(judge, texts[name].text) for judge, name in pairs]))
        scores = r.verdict_scores(verdicts)
        by_answer: dict[str, list[float]] = {}
        for (judge, name), score, row in zip(pairs, scores, r.stages[-1]["calls"]):
            row["of"] = name
            if score is not None:
                by_answer.setdefault(name, []).append(score)
        plan = r.plan
        fused = {}
        for name, reply in answered:
            cross = sum(by_answer[name]) / len(by_answer[name]) if by_answer.get(name) else None
            fused[name] = fuse(plan.quality[name], self_score(reply.mean_logprob), cross, plan.weights)
        r.stages[-1]["fused"] = {name: round(score, 4) for name, score in fused.items()}
        return fused


class MoA:
    """Together MoA: the proposers answer, each later layer answers again seeing the previous layer's answers, and
    the aggregator writes the final answer from the last layer's."""

    async def run(self, r: Run) -> Outcome:
        plan = r.plan
        names = plan.ranked[: plan.spec.proposers]
        answers: list[Reply] = []
        for layer in range(1, plan.spec.layers + 1):
            messages = prompts.aggregate(plan.messages, [a.text for a in answers]) if answers else plan.messages
            replies = await r.stage(f"layer-{layer}", [r.proposal(name, messages) for name in names])
            answers = [reply for reply in replies if reply is not None] or answers
        if not answers:
            return r.fall_back("no proposer answered")
        return r.aggregate_or_best(plan.aggregator, answers)


class SelfMoA:
    """Self-MoA: the top specialist sampled k times (Serve spreads the samples over its replicas), then it
    aggregates its own samples."""

    async def run(self, r: Run) -> Outcome:
        top = r.plan.ranked[0]
        replies = await r.stage("sample", [r.proposal(top, r.plan.messages, sample=i + 1) for i in range(r.spec.proposers)])
        answers = [reply for reply in replies if reply is not None]
        if not answers:
            return r.fall_back("no sample answered")
        return r.aggregate_or_best(top, answers)


async def _proposals(r: Run) -> list[Reply]:
    calls = [r.proposal(name, r.plan.messages, sample=sample) for name, sample in proposers(r.plan)]
    return [reply for reply in await r.stage("propose", calls) if reply is not None]


class Vote:
    """n proposers; the answer most of them reach wins (ties: the best-ranked proposer's); no further call."""

    async def run(self, r: Run) -> Outcome:
        answers = await _proposals(r)
        if not answers:
            return r.fall_back("no proposer answered")
        keys = [answer_key(a.text) for a in answers]
        counts = Counter(keys)
        winner = next(a for a, key in zip(answers, keys) if counts[key] == max(counts.values()))
        return r.outcome("select", winner.model, answer=winner, votes=max(counts.values()), distinct_answers=len(counts))


class BestOfN:
    """n proposers; the aggregator specialist judges each answer (Yes/No); the best-judged one is returned as is."""

    async def run(self, r: Run) -> Outcome:
        answers = await _proposals(r)
        if not answers:
            return r.fall_back("no proposer answered")
        scores = r.verdict_scores(await r.stage("judge", r.verdicts([(r.plan.aggregator, a.text) for a in answers])))
        best = max(range(len(answers)), key=lambda i: scores[i] if scores[i] is not None else -1.0)  # ties: best-ranked
        return r.outcome("select", answers[best].model, answer=answers[best])


class Refine:
    """One critic loop: the top specialist answers, the aggregator specialist critiques, the top one revises."""

    async def run(self, r: Run) -> Outcome:
        plan, top = r.plan, r.plan.ranked[0]
        [draft] = await r.stage("answer", [r.proposal(top, plan.messages)])
        if draft is None:
            return r.fall_back("no draft answered")
        [review] = await r.stage("critique", [r.proposal(plan.aggregator, prompts.critique(plan.messages, draft.text))])
        if review is None:
            return r.outcome("select", top, answer=draft, critique="none in time")
        final = r.final_call(top, prompts.revise(plan.messages, draft.text, review.text))
        if final is None:
            return r.outcome("select", top, answer=draft, budget_exhausted=True)
        return r.outcome("revise", top, final=final)


MODES = {"routemoa": RouteMoA, "moa": MoA, "self_moa": SelfMoA, "vote": Vote, "best_of_n": BestOfN, "refine": Refine}


def check_budget(plan: Plan) -> None:
    """BudgetExhausted if the request's token budget does not even cover its prompt and one answer token."""
    if TokenBudget(plan.spec.token_budget).max_tokens(plan.messages, 1) < 1:
        raise BudgetExhausted(f"router.ensemble.token_budget {plan.spec.token_budget} does not cover this prompt "
                              "and one answer token")


async def run(plan: Plan, caller: Caller, progress: Callable[[str], None] = lambda _: None) -> Outcome:
    """Drive the plan's mode to its outcome."""
    check_budget(plan)
    return await MODES[plan.spec.mode]().run(Run(plan, caller, progress))

