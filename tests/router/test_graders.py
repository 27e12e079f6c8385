"""Graders of the labeling command, without any server."""

import pytest

from router.ensemble.answers import extract_letter, extract_number
from router.training.graders import grade_code, grade_letter, grade_number


@pytest.mark.parametrize("text,number", [("so 3 + 4 = 7. #### 7", "7"), ("The answer is $1,234.", "1234"),
                                         ("She pays 18 dollars.", "18"), ("no digits", None), ("x = -2.5", "-2.5")])
def test_extract_number(text, number):
    assert extract_number(text) == number


def test_grade_number_compares_values():
    assert grade_number("The answer is 18.0", "18") and not grade_number("The answer is 17", "18")


@pytest.mark.parametrize("text,letter", [("B", "B"), ("Answer: C", "C"), ("The answer is (D).", "D"),
                                         ("(a) is wrong; answer: A", "A"), ("I think B. Because...", "B"), ("none", None)])
def test_extract_letter(text, letter):
    assert extract_letter(text) == letter
    assert grade_letter(text, "B") == (letter == "B")


HUMANEVAL = {"kind": "humaneval", "task": "def add(a, b):\n", "entry_point": "add",
             "test": "def check(f):\n    assert f(2, 3) == 5\ncheck(add)\n"}


def test_code_passes_and_fails_its_tests():
    assert grade_code("```python\ndef add(a, b):\n    return a + b\n```", HUMANEVAL)
    assert not grade_code("```python\ndef add(a, b):\n    return a - b\n```", HUMANEVAL)
    assert grade_code("    return a + b\n", HUMANEVAL)  # a bare body completes the prompt


def test_code_is_stopped_by_the_timeout_and_has_no_network():
    assert not grade_code("def add(a, b):\n    while True: pass\n", HUMANEVAL | {"test": "add(1, 2)\n"}, timeout_s=1)
    network = "import socket\nsocket.create_connection(('127.0.0.1', 9))\n"
    assert not grade_code(network, HUMANEVAL | {"test": ""})


def test_leetcode_cases_run_against_the_class():
    from router.training import data

    item = next(i for i in data.load() if i.get("check", {}).get("kind") == "leetcode" and "Two Sum\n" in i["prompt"][:9])
    solution = ("class Solution:\n    def two_sum(self, nums, target):\n        seen = {}\n"
                "        for i, x in enumerate(nums):\n            if target - x in seen:\n                return [seen[target - x], i]\n"
                "            seen[x] = i\n")
    assert grade_code(f"```python\n{solution}```", item["check"])
    assert not grade_code("```python\nclass Solution:\n    def two_sum(self, nums, target):\n        return []\n```", item["check"])
