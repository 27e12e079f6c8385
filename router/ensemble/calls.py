"""What an ensemble asks of a specialist and what comes back: the seam between router/ (which plans the calls) and
serve/ (which makes them through the same dispatch path as single requests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Call:
    model: str
    messages: list[dict]
    max_tokens: int
    temperature: float = 0.0
    seed: int | None = None
    logprobs: bool = False  # per-token logprobs of the answer: the self-assessment
    top_logprobs: int = 0  # alternatives of each token: a Yes/No verdict's P(Yes)


@dataclass
class Reply:
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str | None = None
    mean_logprob: float | None = None
    first_token_top: dict[str, float] | None = field(default=None, repr=False)


Caller = Callable[[Call], Awaitable[Reply]]
