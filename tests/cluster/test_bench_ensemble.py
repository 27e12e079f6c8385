"""The ensemble benchmark without a cluster: committed items, the paired bootstrap, the report's figures and resuming."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cluster.bench.ensemble import (
    ITEMS_PATH, BIOMED_SUBJECT, KIND_GROUP, Item, ItemsError, Sent, accuracy_by_kind, load_items, paired_ci, parse_args,
    parse_methods, priced, read_store, read_stream, report, request_body, result, run, screen_counts, write_items, write_results,
)
from router.training import data

PARAMS = {"big": 1.5, "small": 0.5}


@pytest.fixture(scope="module")
def dataset() -> list[dict]:
    return data.load()


def test_item_ids_resolve_and_splits_are_disjoint_with_the_promised_kinds(dataset):
    splits = load_items(ITEMS_PATH, dataset)
    dev, test = ({item.id for item in splits[s]} for s in ("dev", "test"))
    assert len(dev) == 30 and len(test) >= 60 and not dev & test
    assert Counter(KIND_GROUP[i.kind] for i in splits["dev"]) == {"number": 10, "code": 10, "letter": 10}
    assert Counter(KIND_GROUP[i.kind] for i in splits["test"]) == {"number": 20, "code": 20, "letter": 20}
    assert all(i.source == "gsm8k" for i in splits["test"] if i.kind == "number")
    assert sum(bool(BIOMED_SUBJECT.search(i.source)) for i in splits["test"] if i.kind == "letter") >= 8


def test_item_file_regenerates_byte_for_byte(tmp_path):
    seed = json.loads(ITEMS_PATH.read_text())["seed"]
    write_items(tmp_path / "items.json", seed)
    assert (tmp_path / "items.json").read_text() == ITEMS_PATH.read_text()


def test_an_unknown_item_id_fails_naming_it(tmp_path, dataset):
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"splits": {"test": [{"id": "0123456789abcdef"}]}}))
    with pytest.raises(ItemsError, match="test:0123456789abcdef"):
        load_items(path, dataset)


def test_bootstrap_of_identical_methods_is_a_narrow_interval_around_zero():
    same = {f"i{k}": k % 3 == 0 for k in range(60)}
    lo, hi = paired_ci(same, dict(same))
    assert lo <= 0 <= hi and hi - lo < 0.01


def test_bootstrap_of_a_method_right_wherever_moa_is_wrong_lies_above_zero():
    moa = {f"i{k}": k % 3 == 0 for k in range(60)}
    better = {item: True for item in moa}
    lo, hi = paired_ci(better, moa)
    assert 0 < lo <= hi
    assert paired_ci(better, {}) is None


def _record(split: str, item: str, method: str, correct: bool, **extra) -> dict:
    record = {"split": split, "item": item, "method": method, "kind": "number", "status": "ok", "error": None,
              "correct": correct, "text": "", "usage": {"total_tokens": 100}, "answered_by": method.removeprefix("pinned:"),
              "calls": 1, "call_tokens": [], "early_stop": None, "kept": None, "degraded": None, "wall_s": 1.0, "ttft_s": 0.5}
    return record | extra


def _store() -> list[dict]:
    """Dev: `small` beats `big`. Test: `big` is right on i0, i1; `small` on i2; nobody on i3."""
    rows = [_record("dev", "d0", "pinned:big", False), _record("dev", "d0", "pinned:small", True)]
    for i, (big, small) in enumerate([(True, False), (True, False), (False, True), (False, False)]):
        item = f"i{i}"
        rows += [_record("test", item, "pinned:big", big), _record("test", item, "pinned:small", small),
                 _record("test", item, "moa", i == 0, answered_by="big", calls=4, usage={"total_tokens": 1000}, wall_s=10.0,
                         call_tokens=[["small", 300], ["small", 300]], early_stop=False)]  # + the aggregate: 400 at big
    kept = [["big", "small"], ["small", "big"], ["big"], ["big", "small"]]  # top-1 right on i0; top-3 on i0, i1
    rows += [_record("test", f"i{i}", "routemoa", True, answered_by="big", calls=2, kept=k, early_stop=i == 0,
                     call_tokens=[["big", 100], ["big", 100]], usage={"total_tokens": 200}, wall_s=3.0)
             for i, k in enumerate(kept)]
    return rows


def test_report_has_every_promised_field_and_chooses_single_best_on_dev():
    doc = report(_store(), PARAMS, "local")
    assert {"items", "profile", "split", "methods", "goals"} <= doc.keys() and doc["items"] == 4 and doc["split"] == "test"
    promised = {"n", "accuracy", "accuracy_diff_vs_moa_ci", "tokens_total", "tokens_per_item", "tokens_x_params_b",
                "wall_p50_s", "wall_p95_s", "ttft_p50_s", "calls_per_item", "early_stop_rate"}
    for name in ("pinned:big", "pinned:small", "moa", "routemoa", "single_best", "oracle"):
        assert promised <= doc["methods"][name].keys(), name
    best = doc["methods"]["single_best"]
    assert doc["single_best"] == best["model"] == "small" and best["accuracy"] == 0.25  # chosen on dev, not on test
    assert doc["methods"]["oracle"]["accuracy"] == 0.75
    assert doc["methods"]["moa"]["accuracy_diff_vs_moa_ci"] == [0.0, 0.0]


def test_without_every_specialist_pinned_there_is_no_oracle_to_understate():
    doc = report([r for r in _store() if r["method"] != "pinned:small"], PARAMS, "local")
    assert "oracle" not in doc["methods"] and "scorer_top1_hit" not in doc["methods"]["routemoa"]
    assert doc["methods"]["pinned:big"]["accuracy"] == 0.5


def test_the_committed_results_re_report_the_same_figures_without_answer_texts(tmp_path):
    rows = [r | {"text": "the answer"} for r in _store()] + [_record("other", "x", "moa", True)]
    path = tmp_path / "ensemble.results.jsonl"
    assert write_results(rows, "test", path) == len(rows) - 1  # the test split's and dev's: what the report reads
    exported = list(read_store(path).values())
    assert all("text" not in r for r in exported)
    assert report(exported, PARAMS, "local") == report(rows, PARAMS, "local")


def test_accuracy_is_also_reported_per_kind_group():
    rows = [_record("test", "a", "moa", True), _record("test", "b", "moa", False),
            _record("test", "c", "moa", True, kind="letter"), _record("test", "d", "moa", False, kind="humaneval"),
            _record("test", "e", "moa", True, kind="leetcode")]
    assert accuracy_by_kind(rows) == {"code": 0.5, "letter": 1.0, "number": 0.5}
    assert report(_store(), PARAMS, "local")["methods"]["pinned:big"]["accuracy_by_kind"] == {"number": 0.5}


def test_report_prices_each_call_by_its_model_and_counts_scorer_hits():
    methods = report(_store(), PARAMS, "local")["methods"]
    moa, routemoa = methods["moa"], methods["routemoa"]
    assert moa["tokens_total"] == 4000 and moa["calls_per_item"] == 4 and moa["early_stop_rate"] == 0
    assert moa["tokens_x_params_b"] == pytest.approx(4 * (600 * 0.5 + 400 * 1.5))
    assert methods["pinned:small"]["tokens_x_params_b"] == pytest.approx(4 * 100 * 0.5)  # no stages: answered_by prices it
    assert routemoa["early_stop_rate"] == 0.25 and routemoa["wall_p50_s"] == 3.0
    assert (routemoa["scorer_hit_items"], routemoa["scorer_top1_hit"], routemoa["scorer_top3_hit"]) == (3, 0.3333, 0.6667)
    assert report(_store(), {"big": None, "small": 0.5}, "local")["methods"]["moa"]["tokens_x_params_b"] is None


def test_goals_compare_routemoa_with_moa_and_single_best():
    goals = report(_store(), PARAMS, "local")["goals"]
    assert goals["routemoa_tokens_per_item_vs_moa"] == {"value": 0.2, "rule": "<=", "target": 0.4, "met": True}
    assert goals["routemoa_wall_p50_vs_moa"]["value"] == 0.3 and goals["routemoa_wall_p50_vs_moa"]["met"]
    assert goals["routemoa_accuracy_diff_vs_moa_ci_low"]["met"] and goals["routemoa_accuracy_minus_single_best"]["value"] == 0.75
    partial = report(_store(), PARAMS, "local", planned=60)  # 4 of 60 items: figures, no verdicts
    assert partial["planned_items"] == 60 and {g["met"] for g in partial["goals"].values()} == {None}
    assert partial["goals"]["routemoa_tokens_per_item_vs_moa"]["value"] == 0.2


def test_only_items_every_method_answered_are_compared():
    """Pinned results that ran ahead of the ensembles (i4, i5: big wrong) must not move single_best or the oracle."""
    ahead = [_record("test", f"i{i}", f"pinned:{m}", False) for i in (4, 5) for m in ("big", "small")]
    doc = report(_store() + ahead, PARAMS, "local", planned=60)
    assert doc["items"] == 4 and all(m["n"] == 4 for m in doc["methods"].values())
    assert doc["methods"]["single_best"]["accuracy"] == 0.25 and doc["methods"]["oracle"]["accuracy"] == 0.75


def _item(k: int) -> Item:
    return Item(f"item{k}", "gsm8k", {"kind": "number", "task": f"What is {k} + 1?", "answer": str(k + 1)})


def test_resume_sends_only_what_the_store_lacks(tmp_path):
    sent: list[dict] = []

    def fake_send(base_url: str, body: dict) -> Sent:
        sent.append(body)
        answer = body["messages"][0]["content"].split()[2]
        status = "http 503: overloaded" if body["router"].get("ensemble") and answer == "1" else "ok"
        return Sent(status, f"#### {int(answer) + 1}", {"total_tokens": 10}, {"mode": "auto", "answered_by": "big"}, 0.1, 0.05)

    items, store = {"test": [_item(0), _item(1)]}, tmp_path / "store.jsonl"
    assert run(items, ["single", "moa"], store, "http://127.0.0.1:8000", send=fake_send) == 4
    assert run(items, ["single", "moa"], store, "http://127.0.0.1:8000", send=fake_send) == 0 and len(sent) == 4
    stored = read_store(store)
    assert stored[("test", "item0", "single")]["correct"] and stored[("test", "item1", "moa")]["status"] == "error"
    assert run(items, ["single", "moa"], store, "http://127.0.0.1:8000", send=fake_send, retry_errors=True) == 1
    assert run(items, ["single", "moa", "vote"], store, "http://127.0.0.1:8000", send=fake_send, max_s=0) == 0


def test_request_bodies_turn_the_cache_off_and_pin_or_ask_for_an_ensemble():
    item = Item("x", "leetcode", {"kind": "leetcode", "task": "Solve it.", "test": ""})
    single, pinned, moa = (request_body(item, m, proposer_cap=256) for m in ("single", "pinned:big", "moa"))
    assert single["model"] == moa["model"] == "auto" and pinned["model"] == "big"
    assert all(b["router"]["cache"] is False and b["temperature"] == 0 and b["max_tokens"] == 768 for b in (single, pinned, moa))
    assert moa["router"]["ensemble"] == {"mode": "moa", "max_tokens": 256} and "ensemble" not in single["router"]
    letter = Item("y", "mmlu/anatomy", {"kind": "letter", "task": "Which? A. x B. y", "answer": "A"})
    assert request_body(letter, "vote", proposer_cap=256)["router"]["ensemble"] == {"mode": "vote", "max_tokens": 32}
    assert request_body(letter, "vote")["router"]["ensemble"] == {"mode": "vote"}  # the profile's default
    tuned = request_body(letter, "routemoa+score_gap=0.5+early_stop=1")["router"]["ensemble"]
    assert tuned == {"mode": "routemoa", "score_gap": 0.5, "early_stop": 1}  # a variant tried on dev
    assert "```python" in single["messages"][0]["content"] and single["stream_options"] == {"include_usage": True}


def test_stream_reading_takes_content_usage_errors_and_a_trace_sent_as_comment():
    trace = {"mode": "ensemble", "answered_by": "big", "ensemble": {"calls": 3}}
    lines = [": propose 2/3", "", f": trace {json.dumps(trace)}",
             'data: {"choices": [{"delta": {"role": "assistant"}}]}', 'data: {"choices": [{"delta": {"content": "4"}}]}',
             'data: {"choices": [{"delta": {"content": "2"}}]}', 'data: {"choices": [], "usage": {"total_tokens": 9}}',
             "data: [DONE]"]
    status, text, usage, streamed, ttft = read_stream(lines, 0.0)
    assert (status, text, usage, streamed) == ("ok", "42", {"total_tokens": 9}, trace) and ttft is not None
    broken = read_stream(['data: {"error": {"message": "engine died", "code": "unavailable"}}', "data: [DONE]"], 0.0)
    assert broken[0] == "stream error: engine died" and broken[4] is None


def test_result_reads_the_ensemble_trace():
    calls = [{"model": "big", "prompt_tokens": 20, "completion_tokens": 30},
             {"model": "small", "prompt_tokens": 10, "completion_tokens": 10}]
    trace = {"mode": "ensemble", "answered_by": "big", "ensemble": {
        "calls": 3, "early_stop": True, "screen": {"kept": ["big", "small"]}, "degraded": None,
        "usage": {"prompt_tokens": 30, "completion_tokens": 40}, "stages": [{"name": "propose", "calls": calls}]}}
    row = result("test", _item(41), "routemoa", Sent("ok", "The answer is 42.", None, trace, 2.0, 1.0))
    assert row["correct"] and row["calls"] == 3 and row["kept"] == ["big", "small"] and row["early_stop"] is True
    assert row["usage"] == {"prompt_tokens": 30, "completion_tokens": 40} and row["call_tokens"] == [["big", 50], ["small", 20]]
    assert priced(row, {"big": 2.0, "small": 1.0}) == 2.0 * 50 + 1.0 * 20
    degraded = {"mode": "auto", "answered_by": "big", "ensemble": {"mode": "routemoa", "degraded": "load: 0.95"}}
    row = result("test", _item(41), "routemoa", Sent("ok", "42", {"total_tokens": 9}, degraded, 2.0, 1.0))
    assert row["calls"] == 1 and row["degraded"] == "load: 0.95" and priced(row, {"big": 2.0}) == 18


def test_the_screen_keeps_what_is_within_the_gap_of_the_best_at_most_three():
    items = [Item("a", "gsm8k", {"kind": "number", "task": "peaked"}), Item("b", "gsm8k", {"kind": "number", "task": "close"})]
    predicted = {"peaked": {"x": 0.95, "y": 0.03, "z": 0.02},
                 "close": {"w": 0.9, "x": 0.8, "y": 0.75, "z": 0.7}}
    counts = screen_counts(items, predicted.__getitem__, [0.2, 0.5, 1.0])
    assert counts == {"0.2": {"1": 1, "3": 1}, "0.5": {"1": 1, "3": 1}, "1": {"3": 2}}


def test_methods_and_urls_are_checked():
    assert parse_methods("single,pinned", ["big", "small"]) == ["single", "pinned:big", "pinned:small"]
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("single,mixture", ["big"])
    assert parse_methods("routemoa+score_gap=0.35", ["big"]) == ["routemoa+score_gap=0.35"]
    with pytest.raises(ValueError, match="'k' is not a router.ensemble field"):
        parse_methods("routemoa+k=2", ["big"])
    with pytest.raises(SystemExit):
        parse_args(["--base-url", "http://10.0.0.5:8000"])
