"""The router's public face for serve/: `Router.from_profile(profile).decide(prompt, weights, load)`.

`prompt` is the text the ingress extracts (serve/requests.py `routing_text`: the last user message of a chat,
or the completion prompt); the encoder reads its first 128 WordPiece tokens.
Quality per specialist: the checkpoint's per-model head of the specialist's name (or of the `quality_head` the
catalog maps it to: a model's name in the outcome files the scorer learnt from), otherwise the role prior
P(prompt belongs to one of the specialist's roles) = the sum of the role probabilities of its roles (capped at 1),
which works for any profile. Without a usable checkpoint the role probabilities come from the
keyword baseline (router/keywords.py): a checkpoint that fails to load for any reason (missing, corrupt, built for
another encoder, its kNN reference not prepared, a missing package) must not stop the router from serving, so every
trace says so in `scorer` and `scorer_status` tells /healthz and /v1/models why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from router.catalog import ROLES, CatalogError, Profile, Specialist
from router.keywords import keyword_role_probs
from router.policy import Decision, Load, Weights, rank
from router.scorer import DEFAULT_CHECKPOINT, Scorer

__all__ = ["Decision", "Load", "Router", "Weights"]
log = logging.getLogger(__name__)
MAX_BATCH = 64

Prediction = tuple[torch.Tensor, torch.Tensor]  # role probabilities (roles,), per-model quality (models,)


class MicroBatcher:
    """Coalesces concurrent `submit` calls into one `predict` call: while a batch runs (in a worker thread),
    new prompts queue up and go together in the next one, so an idle router adds no waiting."""

    def __init__(self, predict: Callable[[list[str]], Prediction], max_batch: int = MAX_BATCH) -> None:
        self.predict = predict
        self.max_batch = max_batch
        self.pending: list[tuple[str, asyncio.Future]] = []
        self.draining = False

    async def submit(self, text: str) -> Prediction:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((text, future))
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # let callers that arrived in the same loop tick join the first batch
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    roles, models = await asyncio.to_thread(self.predict, [text for text, _ in batch])
                except Exception as error:  # every waiter gets the scorer's error rather than hanging
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for i, (_, future) in enumerate(batch):
                    if not future.done():
                        future.set_result((roles[i], models[i]))
        finally:
            self.draining = False


class Router:
    """Scores a prompt for every specialist of a profile and ranks them with the `auto` policy."""

    def __init__(self, profile: Profile, scorer: Scorer | None, fallback_reason: str = "") -> None:
        self.profile = profile
        self.scorer = scorer
        self.fallback_reason = fallback_reason
        self.scorer_name = scorer.name if scorer else f"keyword-fallback ({fallback_reason})"
        self.quality_from = quality_sources(profile, scorer)
        known = scorer.model_names if scorer else []
        self.head_index = {s.name: known.index(head_name(s)) for s in profile.specialists if head_name(s) in known}
        self.batcher = MicroBatcher(self.predict)

    @property
    def scorer_status(self) -> dict:
        """Which scorer decides, for /healthz and /v1/models: the checkpoint's, or the keyword fallback and why."""
        if self.scorer is None:
            return {"name": "keyword-fallback", "fallback": True, "reason": self.fallback_reason}
        return {"name": self.scorer.name, "fallback": False}

    @classmethod
    def from_profile(cls, profile: Profile, checkpoint: str | Path | None = None) -> Router:
        path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        try:
            scorer = Scorer.load(path)
        except Exception as error:  # noqa: BLE001 -- whatever broke, route by keywords rather than not at all
            log.exception("router: no usable checkpoint at %s; using the keyword baseline", path)
            return cls(profile, None, f"no usable checkpoint at {path}: {type(error).__name__}: {error}")
        return cls(profile, scorer)  # a catalog mapping to a head the checkpoint lacks is the operator's error: raised

    def predict(self, texts: list[str]) -> Prediction:
        if self.scorer is None:
            return keyword_role_probs(texts), torch.zeros(len(texts), 0)
        return self.scorer.predict(texts)

    def specialist_quality(self, roles: torch.Tensor, models: torch.Tensor) -> dict[str, float]:
        quality = {}
        for s in self.profile.specialists:
            if s.name in self.head_index:
                quality[s.name] = float(models[self.head_index[s.name]])
            else:
                quality[s.name] = min(1.0, sum(float(roles[ROLES.index(r)]) for r in s.roles))
        return quality

    def _decision(self, prediction: Prediction, weights: Weights | None, load: Mapping[str, Load] | None) -> Decision:
        roles, models = prediction
        extra = {"scorer": self.scorer_name, "quality_from": self.quality_from,
                 "roles": {r: round(float(p), 4) for r, p in zip(ROLES, roles)}}
        weights = weights or Weights.from_request(None, self.profile.router)
        return rank(self.profile, self.specialist_quality(roles, models), weights, load, extra)

    def decide(self, prompt: str, weights: Weights | None = None, load: Mapping[str, Load] | None = None) -> Decision:
        roles, models = self.predict([prompt])
        return self._decision((roles[0], models[0]), weights, load)

    async def adecide(self, prompt: str, weights: Weights | None = None, load: Mapping[str, Load] | None = None) -> Decision:
        return self._decision(await self.batcher.submit(prompt), weights, load)


def head_name(spec: Specialist) -> str:
    """The checkpoint head a specialist's quality comes from, when the checkpoint has it."""
    return spec.quality_head or spec.name


def quality_sources(profile: Profile, scorer: Scorer | None) -> dict[str, str]:
    """Where each specialist's predicted quality comes from (a head and the outcome files that trained it, or its role
    prior), for the trace and /v1/models. CatalogError for a specialist mapped to a head the checkpoint lacks."""
    known = scorer.model_names if scorer else []
    if scorer is not None and (unmapped := {s.name: s.quality_head for s in profile.specialists
                                            if s.quality_head and s.quality_head not in known}):
        raise CatalogError(f"specialist(s) mapped by `quality_head` to heads the checkpoint does not have: {unmapped}; "
                           f"its heads: {known or 'none (role-only checkpoint)'}")
    trained_on = scorer.meta.get("train", {}).get("model_sources", {}) if scorer else {}
    sources = {}
    for s in profile.specialists:
        if head_name(s) in known:
            files = trained_on.get(head_name(s))
            sources[s.name] = f"head {head_name(s)}" + (f" ({', '.join(files)})" if files else "")
        else:
            sources[s.name] = f"role prior ({', '.join(s.roles)})"
    return sources
