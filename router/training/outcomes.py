"""Per-model outcome files, in the shapes routers are trained from, read into one form: prompts x models, a score in
[0, 1] per graded answer, None where a model was not graded on a prompt.

- LLMRouter JSON: `[{"question": str, "scores": {model: number}}, ...]` (a JSON list, or one object per line);
- RouteLLM CSV, and `python -m router label`'s output: a `prompt` column and one column per model holding True/False or
  a number in [0, 1]; text columns (responses, source, domain) are not models;
- the quality monitor's judged JSONL (serve/quality.py): `prompt`, `model` and a boolean `correct` per line.

A malformed file is refused with the row and the reason (OutcomeFileError)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

BOOLEAN_WORDS = {"true": 1.0, "false": 0.0}


class OutcomeFileError(ValueError):
    """An outcome file this module cannot read, naming the file, the row and the reason."""


@dataclass(frozen=True)
class Outcomes:
    """One file's outcomes: `scores[model][i]` is the score of `model`'s answer to `prompts[i]`, None if ungraded."""

    prompts: list[str]
    scores: dict[str, list[float | None]]

    @property
    def models(self) -> list[str]:
        return list(self.scores)


def read_outcomes(path: Path) -> Outcomes:
    """Any of the module's shapes, told apart by the suffix and, for JSON lines, by the first line's keys."""
    path = Path(path)
    if path.suffix == ".csv":
        return _read_csv(path)
    if path.suffix == ".json":
        rows = _load_json(path)
        if not isinstance(rows, list):
            raise OutcomeFileError(f"{path}: expected a JSON list of {{\"question\", \"scores\"}} objects")
        return _from_score_rows(path, enumerate(rows))
    if ".jsonl" in path.suffixes:  # judged-<replica>.jsonl and its rotated .jsonl.1, .jsonl.2, ...
        rows = list(_jsonl_rows(path))
        if rows and "scores" in rows[0][1]:
            return _from_score_rows(path, rows)
        return _from_judged_rows(path, rows)
    raise OutcomeFileError(f"{path}: unknown outcome file type (expected .csv, .json or .jsonl)")


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OutcomeFileError(f"{path}: not JSON ({e})") from None


def _jsonl_rows(path: Path):
    """(line number, object) for each non-empty line."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise OutcomeFileError(f"{path}:{number}: not JSON ({e})") from None
        if not isinstance(row, dict):
            raise OutcomeFileError(f"{path}:{number}: expected a JSON object")
        yield number, row


def score_value(value: object) -> float | None:
    """A score as the files write it: a number in [0, 1], a boolean (or its word), or empty/null for ungraded.
    ValueError for anything else."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        if value.strip().lower() in BOOLEAN_WORDS:
            return BOOLEAN_WORDS[value.strip().lower()]
        value = float(value)
    if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"score {value!r} is not a number in [0, 1] or a boolean")
    return float(value)


def _from_score_rows(path: Path, rows) -> Outcomes:
    """LLMRouter's rows: `question` (or `prompt`) and a `scores` object per row."""
    prompts: list[str] = []
    graded: list[dict[str, float | None]] = []
    for where, row in rows:
        prompt = row.get("question", row.get("prompt")) if isinstance(row, dict) else None
        scores = row.get("scores") if isinstance(row, dict) else None
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(scores, dict) or not scores:
            raise OutcomeFileError(f"{path}: row {where}: needs a non-empty string `question` and a `scores` object")
        try:
            graded.append({str(model): score_value(value) for model, value in scores.items()})
        except ValueError as e:
            raise OutcomeFileError(f"{path}: row {where}: {e}") from None
        prompts.append(prompt)
    return _outcomes(path, prompts, graded)


def _from_judged_rows(path: Path, rows) -> Outcomes:
    """The quality monitor's judged answers, one per line, gathered by prompt."""
    by_prompt: dict[str, dict[str, float | None]] = {}
    for number, row in rows:
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("model"), str) or not isinstance(row.get("correct"), bool):
            raise OutcomeFileError(f"{path}:{number}: a judged line needs a string `prompt` and `model` and a boolean `correct`")
        by_prompt.setdefault(row["prompt"], {})[row["model"]] = float(row["correct"])
    return _outcomes(path, list(by_prompt), list(by_prompt.values()))


def _read_csv(path: Path) -> Outcomes:
    """`prompt` plus model columns: a column is a model's when every value in it is a boolean word, a number or
    empty (ungraded), and at least one is not empty."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "prompt" not in rows[0]:
        raise OutcomeFileError(f"{path}: expected a CSV with a header, a `prompt` column and at least one row")
    models = [c for c in rows[0] if c not in ("prompt", None)
              and all(_looks_like_score(r[c]) for r in rows) and any((r[c] or "").strip() for r in rows)]
    graded = []
    for number, row in enumerate(rows, 2):  # line 1 is the header
        if not (row["prompt"] or "").strip():
            raise OutcomeFileError(f"{path}:{number}: empty `prompt`")
        try:
            graded.append({model: score_value(row[model]) for model in models})
        except ValueError as e:
            raise OutcomeFileError(f"{path}:{number}: {e}") from None
    return _outcomes(path, [r["prompt"] for r in rows], graded)


def _looks_like_score(value: str | None) -> bool:
    if value is None or value.strip() == "" or value.strip().lower() in BOOLEAN_WORDS:
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def _outcomes(path: Path, prompts: list[str], graded: list[dict[str, float | None]]) -> Outcomes:
    """Per-model columns from per-prompt dicts; refuses a file with no graded answer at all."""
    models = list(dict.fromkeys(model for row in graded for model in row))
    scores = {model: [row.get(model) for row in graded] for model in models}
    if not any(v is not None for column in scores.values() for v in column):
        raise OutcomeFileError(f"{path}: no model columns with graded answers")
    return Outcomes(prompts, scores)
