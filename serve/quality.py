"""The online quality monitor: a judge specialist grades a deterministic sample of served answers, off the hot path.

A request is sampled when the hash of its id falls under `judge_sample_rate` (so a replayed id is sampled again, and
every replica agrees). The grade is the judge's one-token Yes/No verdict read as P(Yes) (router/ensemble/judging.py,
the same judgement the ensembles use). Each grade becomes a `router_judge_score` observation and a line in the judged
dataset (prompt, specialist, score, and correct = score >= `judge_correct_at`), which
`python -m router train --outcomes <files>` takes to retrain the router from served traffic. Enabling the judge therefore keeps the sampled prompts' text in that dataset.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from router.catalog import Observability
from router.ensemble.calls import Call, Reply
from router.ensemble.judging import verdict_call, yes_probability
from serve.jsonl_log import JsonlLog

log = logging.getLogger("ray.serve")


def sampled(request_id: str, rate: float) -> bool:
    """Deterministic by id: the first 8 bytes of its sha256 as a fraction of 2^64, under the rate."""
    return rate > 0 and int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") < rate * 2**64


class QualityMonitor:
    """Queues gradings as tasks, at most `judge_max_pending` at a time: under load, samples are skipped, never queued."""

    def __init__(self, config: Observability, call: Callable[[Call], Awaitable[Reply]],
                 on_score: Callable[[str, float], None], dataset: JsonlLog | None) -> None:
        assert config.judge is not None
        self.judge, self.rate, self.max_pending = config.judge, config.judge_sample_rate, config.judge_max_pending
        self.correct_at = config.judge_correct_at
        self.call, self.on_score, self.dataset = call, on_score, dataset
        self.pending: set[asyncio.Task] = set()
        self.skipped = 0

    def wants(self, request_id: str) -> bool:
        return sampled(request_id, self.rate)

    def submit(self, request_id: str, specialist: str, messages: list[dict], prompt: str, answer: str) -> None:
        if len(self.pending) >= self.max_pending:
            self.skipped += 1
            return
        task = asyncio.get_running_loop().create_task(self._grade(request_id, specialist, messages, prompt, answer))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _grade(self, request_id: str, specialist: str, messages: list[dict], prompt: str, answer: str) -> None:
        try:
            reply = await self.call(verdict_call(self.judge, messages, answer))
        except Exception as e:  # noqa: BLE001 -- a grading that fails is a missing sample, not a served error
            log.warning("quality monitor: the judge %s could not grade request %s: %s", self.judge, request_id, e)
            return
        score = yes_probability(reply.first_token_top)
        self.on_score(specialist, score)
        if self.dataset is not None:
            self.dataset.write({"request_id": request_id, "time": round(time.time(), 3), "prompt": prompt, "model": specialist,
                                "score": round(score, 4), "correct": score >= self.correct_at, "judge": self.judge})
