"""The request's cap on tokens over every call of an ensemble, kept before each call rather than noticed after.

A call's prompt is bounded from above before it is sent: these models' tokenizers are byte-level BPE, so a
prompt has at most as many tokens as its UTF-8 bytes, plus the chat template's own tokens. A call is sent only
if that bound plus at least one answer token fits what is left; its max_tokens is cut to fit.
"""

from __future__ import annotations

from dataclasses import dataclass

TEMPLATE_TOKENS = 64  # per call: the chat template's markers and any default system prompt (Qwen's is ~30)
PER_MESSAGE_TOKENS = 8  # per message: role markers


def prompt_bound(messages: list[dict]) -> int:
    """An upper bound on a chat prompt's tokens."""
    text = sum(len(str(m.get("content", "")).encode()) for m in messages)
    return TEMPLATE_TOKENS + PER_MESSAGE_TOKENS * len(messages) + text


@dataclass
class TokenBudget:
    limit: int | None  # None: no cap
    spent: int = 0

    def max_tokens(self, messages: list[dict], wanted: int) -> int:
        """The most answer tokens a call with these messages may have now (0: it does not fit at all)."""
        if self.limit is None:
            return wanted
        room = self.limit - self.spent - prompt_bound(messages)
        return max(0, min(wanted, room))

    def reserve(self, messages: list[dict], max_tokens: int) -> None:
        """Count a call at its bound while it runs, so concurrent calls cannot overdraw the cap together."""
        self.spent += prompt_bound(messages) + max_tokens

    def settle(self, messages: list[dict], max_tokens: int, used: int) -> None:
        """Replace a finished (or cancelled: used = 0) call's reservation by what it really used."""
        self.spent += used - prompt_bound(messages) - max_tokens
