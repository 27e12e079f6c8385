"""Dataset building from the installed pinned packages."""

import json
import math
from collections import Counter

import pytest

from router.training import data
from router.training.relabels import BIOMEDICAL, CODE, MATH
from router.training.train import outcome_matrix


def test_dataset_covers_every_domain_with_many_sources():
    items = data.load()
    domains = Counter(i["domain"] for i in items)
    assert set(domains) == set(data.DOMAINS) and min(domains.values()) > 1000
    sources = {i["source"] for i in items}
    assert {"humaneval", "leetcode", "gsm8k", "red-trivia", "healthbench", "mt-bench", "medmcqa", "jee-math"} <= sources
    assert sum(s.startswith("mmlu/") for s in sources) == 57
    assert all(i["prompt"] and i["prompt"] != "question" for i in items)  # header rows dropped


@pytest.mark.parametrize("domain, picks", [("biomedical", BIOMEDICAL), ("code", CODE), ("math", MATH)])
def test_hand_picked_items_of_general_sources_carry_the_specialists_domain(domain, picks):
    """Each hand-picked id still names an item of the source it is listed under (ids shift if a package changes)."""
    by_id = {i["id"]: i for i in data.load()}
    for source, numbers in picks.items():
        for n in numbers:
            assert by_id[f"{source}#{n}"]["source"] == source and by_id[f"{source}#{n}"]["domain"] == domain


def test_relabelling_moves_specialist_requests_and_leaves_look_alikes_general():
    prompts = {i["prompt"]: i["domain"] for i in data.load()}
    assert prompts["How long does it take our eyes to fully adapt to darkness?"] == "biomedical"
    assert prompts["Explain the difference between sets and lists in Python."] == "code"
    assert prompts["Solve for x in the equation 3x + 10 = 5(x - 2)."] == "math"
    assert prompts["Mike's mother had four kids. Three of them are named Luis, Drake, and Matilda. What is the name of "
                   "the fourth kid?"] == "general"  # a riddle, not arithmetic
    assert prompts["How can I reduce my alcohol consumption without seeming rude to my friends?"] == "general"


def test_medical_exam_questions_are_biomedical_multiple_choice_with_their_answer():
    """MedMCQA's own layout (a subject line, lower-case options) is re-rendered like every other multiple choice."""
    exam = {i["prompt"]: i for i in data.load() if i["source"] == "medmcqa"}
    assert len(exam) == 300 and {i["domain"] for i in exam.values()} == {"biomedical"}
    assert not any(p.startswith("Subject:") or "\na) " in p for p in exam)
    vitamin = next(i for p, i in exam.items() if p.startswith("Which vitamin is supplied from only animal source"))
    assert vitamin["check"]["answer"] == "C" and "C. Vitamin B12" in vitamin["check"]["task"]


def test_evals_registry_math_and_sql_are_read_with_their_answers():
    """JEE mathematics and the statistics questions are math, Spider's text-to-SQL is code; each sample kept once."""
    items = data.load()
    sizes = Counter(i["source"] for i in items)
    assert {s: sizes[s] for s in ("jee-math", "stats-tests", "probability-questions", "probability-word-problems",
                                  "spider-sql")} == {"jee-math": 434, "stats-tests": 15, "probability-questions": 100,
                                                     "probability-word-problems": 17, "spider-sql": 194}
    by_prompt = {i["prompt"]: i for i in items}
    jee = next(i for i in items if i["source"] == "jee-math" and "f(1) + f(2) = f(3)" in i["prompt"])
    assert jee["domain"] == "math" and jee["check"]["answer"] == "B" and "B. 90" in jee["check"]["task"]
    assert not any(i["source"] == "jee-math" and "\n(A) " in i["prompt"] for i in items)  # re-rendered
    dice = by_prompt["A pair of fair, standard dice are rolled. What is the probability the sum of the dice is 5"]
    assert dice["check"] == {"kind": "number", "task": dice["prompt"], "answer": "0.1111"}
    cigars = next(i for p, i in by_prompt.items() if p.startswith("At a country club, 7% smoke cigars"))
    assert cigars["check"]["answer"] == "70"
    stats = [i for i in items if i["source"] == "stats-tests"]
    assert all("Answer Choices:" not in i["prompt"] for i in stats) and stats[0]["check"]["answer"] in "ABCD"
    sql = [i for i in items if i["source"] == "spider-sql"]
    assert {i["domain"] for i in sql} == {"code"} and all("Question:" in i["prompt"] and "Table:" in i["prompt"] for i in sql)


def test_multiple_choice_layouts_are_mixed():
    options = ["one", "two", "three", "four"]
    rendered = {data.render_choices(f"Question number {n}?", options).count("\n") for n in range(40)}
    assert len(rendered) >= 3  # bare, one-line and multi-line layouts all occur


def test_checkable_items_carry_what_the_grader_needs():
    kinds = Counter(i["check"]["kind"] for i in data.load() if "check" in i)
    assert kinds["letter"] > 10000 and kinds["number"] > 1300 and kinds["humaneval"] == 164 and kinds["leetcode"] > 1000


def test_the_quality_monitors_judged_lines_become_sparse_outcome_rows(tmp_path):
    """Served traffic graded online retrains the router: each judged answer fills one cell, the rest stay unknown."""
    lines = [{"prompt": "p1", "model": "a", "correct": True}, {"prompt": "p1", "model": "b", "correct": False},
             {"prompt": "p2", "model": "b", "correct": True}]
    judged = tmp_path / "judged-r1.jsonl.1"  # a rotated file reads the same
    judged.write_text("".join(json.dumps({**line, "score": 0.7, "request_id": "x"}) + "\n" for line in lines))
    prompts, names, matrix, sources = outcome_matrix([judged])
    assert sources == {"a": [judged.name], "b": [judged.name]}
    assert prompts == ["p1", "p2"] and names == ["a", "b"]
    assert matrix[0].tolist() == [1.0, 0.0] and math.isnan(matrix[1, 0]) and matrix[1, 1] == 1.0
    judged.write_text(json.dumps({"prompt": "p", "model": "a", "correct": "yes"}) + "\n")
    with pytest.raises(ValueError, match="boolean `correct`"):
        outcome_matrix([judged])
