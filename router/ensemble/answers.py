"""Final answers out of free text: the number, option letter or code a reply settles on.

The graders (router/training/graders.py) score replies with these, and `vote` counts them, so a vote agrees with
how answers are graded.
"""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)
EXPLICIT_LETTER = re.compile(r"answer(?: is)?\s*[:\-]?\s*\(?([A-D])\b", re.I)
ANSWER_MARKERS = ("####", "answer is", "Answer:")


def extract_number(text: str) -> str | None:
    """The final answer: after '####' or 'answer is' if present, else the last number in the text."""
    for marker in ANSWER_MARKERS:
        if marker in text:
            found = NUMBER.findall(text.rsplit(marker, 1)[1])
            if found:
                return found[0].replace(",", "")
    found = NUMBER.findall(text)
    return found[-1].replace(",", "").rstrip(".") if found else None


def extract_letter(text: str) -> str | None:
    """The chosen option: 'Answer: X' / 'answer is (X)' first, else the first standalone A-D."""
    explicit = EXPLICIT_LETTER.search(text)
    if explicit:
        return explicit.group(1).upper()
    bare = re.search(r"(?:^|[\s(])([A-D])(?:[).:\s]|$)", text.strip())
    return bare.group(1) if bare else None


def extract_code(text: str) -> str:
    """The last fenced code block, else the whole reply."""
    blocks = CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else text


def answer_key(text: str) -> str:
    """What two replies must share to count as the same answer in a vote: code, an explicit option letter, a number,
    or else the reply's words, lower-cased with whitespace folded."""
    if CODE_BLOCK.search(text):
        return "code:" + " ".join(extract_code(text).split())
    if letter := EXPLICIT_LETTER.search(text):
        return "letter:" + letter.group(1).upper()
    if (number := extract_number(text)) is not None:
        try:
            return f"number:{float(number):g}"
        except ValueError:
            pass
    if (letter := extract_letter(text)) is not None and len(text.strip()) <= 3:
        return "letter:" + letter
    return "text:" + " ".join(text.lower().split())
