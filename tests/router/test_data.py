"""Dataset building from the installed pinned packages."""

from collections import Counter

from router.training import data


def test_dataset_covers_every_domain_with_many_sources():
    items = data.load()
    domains = Counter(i["domain"] for i in items)
    assert set(domains) == set(data.DOMAINS) and min(domains.values()) > 1000
    sources = {i["source"] for i in items}
    assert {"humaneval", "leetcode", "gsm8k", "red-trivia", "healthbench", "mt-bench"} <= sources
    assert sum(s.startswith("mmlu/") for s in sources) == 57
    assert all(i["prompt"] and i["prompt"] != "question" for i in items)  # header rows dropped


def test_multiple_choice_layouts_are_mixed():
    options = ["one", "two", "three", "four"]
    rendered = {data.render_choices(f"Question number {n}?", options).count("\n") for n in range(40)}
    assert len(rendered) >= 3  # bare, one-line and multi-line layouts all occur


def test_checkable_items_carry_what_the_grader_needs():
    kinds = Counter(i["check"]["kind"] for i in data.load() if "check" in i)
    assert kinds["letter"] > 10000 and kinds["number"] > 1300 and kinds["humaneval"] == 164 and kinds["leetcode"] > 1000
