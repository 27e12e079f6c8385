"""The turns ensembles add to a conversation: references for an aggregator, a verdict request, a critique.

Wording is ours, in the spirit of Together MoA's aggregate-and-synthesize prompt. References are cut to
REFERENCE_CHARS each, because a small model's window and prefill time are what an aggregator pays for.
"""

from __future__ import annotations

REFERENCE_CHARS = 1500

AGGREGATE = (
    "Several assistants answered the user's latest message; their answers are below. Some may be wrong or "
    "incomplete. Check them critically and write one answer of your own that is correct, complete and clear. Do not "
    "mention the other answers.\n\nAnswers:"
)
VERDICT_YES_NO = "Is the answer above correct? Reply with one word: Yes or No."
VERDICT_JSON = 'Rate the answer above for correctness from 0 to 10. Reply only with JSON: {"score": N}.'
CRITIQUE = ("Below is an answer to the user's latest message. List its mistakes and omissions briefly; if it is "
            "correct, say so.")
REVISE = "A reviewer commented on your answer:\n\n{critique}\n\nWrite your final answer to my previous message."


def _cut(text: str) -> str:
    return text if len(text) <= REFERENCE_CHARS else text[:REFERENCE_CHARS] + " [...]"


def with_system(messages: list[dict], text: str) -> list[dict]:
    """The conversation with `text` as its system turn, appended to the client's own system turn if it had one."""
    if messages and messages[0].get("role") == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def aggregate(messages: list[dict], references: list[str]) -> list[dict]:
    """The client's conversation with the references in the system turn: what an aggregator (or a later MoA layer)
    answers."""
    listed = "".join(f"\n\n{i}. {_cut(text)}" for i, text in enumerate(references, 1))
    return with_system(messages, AGGREGATE + listed)


def verdict(messages: list[dict], answer: str, as_json: bool = False) -> list[dict]:
    """A judge's turn on one answer: a one-word Yes/No (read from logprobs) or the paper's JSON score."""
    ask = VERDICT_JSON if as_json else VERDICT_YES_NO
    return [*messages, {"role": "assistant", "content": _cut(answer)}, {"role": "user", "content": ask}]


def critique(messages: list[dict], answer: str) -> list[dict]:
    return with_system(messages, f"{CRITIQUE}\n\nAnswer:\n{_cut(answer)}")


def revise(messages: list[dict], answer: str, critique_text: str) -> list[dict]:
    return [*messages, {"role": "assistant", "content": answer},
            {"role": "user", "content": REVISE.format(critique=_cut(critique_text))}]
