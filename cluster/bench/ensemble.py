"""Benchmark: routed ensembles against single calls, on the same graded items. Not a test.

Every method answers the same committed items (cluster/bench/ensemble_items.json: a `dev` split that picks the best
single specialist, a `test` split that is reported) through the running router, one request at a time, streamed, at
temperature 0 with the labelling command's per-kind max_tokens and the response cache off. Answers are graded by
router/training/graders.py; each (split, item, method) result is appended to a JSONL store, so a rerun resumes.

    python -m cluster.bench.ensemble --profile local --split dev       # every method on dev; picks single_best
    python -m cluster.bench.ensemble --profile local --split dev --screen 0.2,0.5,1   # what each score_gap keeps
    python -m cluster.bench.ensemble --profile local --split dev --methods routemoa+score_gap=1   # tune on dev
    python -m cluster.bench.ensemble --profile local --split test --max-minutes 480   # resumable: run it again
    python -m cluster.bench.ensemble --profile local --report          # docs/benchmarks/ensemble.{json,png,results.jsonl}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
import numpy as np
from tqdm import tqdm

from router.catalog import ENSEMBLE_MODES, REPO_ROOT, Profile, default_cache_dir, load_profile
from router.ensemble import spec
from router.ensemble.modes import near_best
from router.training import data
from router.training.graders import grade
from router.training.label import CODE_INSTRUCTION, MAX_TOKENS

ITEMS_PATH = REPO_ROOT / "cluster" / "bench" / "ensemble_items.json"
MAX_TASK_CHARS = 1500  # leaves room in a 2k window for the answer, and in 4k for an aggregator reading proposals
# (dev, test) items per stratum: 10 / 20 of each kind group (number, code, letter)
STRATA = {"gsm8k": (10, 20), "humaneval": (5, 10), "leetcode": (5, 10), "mmlu-biomed": (4, 8), "mmlu-other": (6, 12)}
BIOMED_SUBJECT = re.compile(r"biology|medic|anatomy|clinical|genetics|virology")  # MMLU subjects of biology and medicine
KIND_GROUP = {"number": "number", "letter": "letter", "humaneval": "code", "leetcode": "code"}
BASELINE = "moa"
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Item:
    id: str
    source: str
    check: dict

    @property
    def kind(self) -> str:
        return self.check["kind"]


class ItemsError(ValueError):
    """The item file names ids the dataset does not have: the benchmark would silently compare other items."""


class Sent(NamedTuple):
    status: str  # "ok", or what failed
    text: str
    usage: dict | None
    trace: dict | None
    wall_s: float
    ttft_s: float | None


Send = Callable[[str, dict], Sent]


# --- items ---------------------------------------------------------------------------------------------------------

def item_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def stratum(item: dict) -> str:
    """GSM8K, HumanEval, LeetCode, or MMLU split into biology/medicine subjects and the rest."""
    if item["source"].startswith("mmlu/"):
        return "mmlu-biomed" if BIOMED_SUBJECT.search(item["source"]) else "mmlu-other"
    return item["source"]


def pick_items(dataset: Iterable[dict], seed: int) -> dict[str, list[dict]]:
    """Disjoint dev and test splits drawn per stratum by one seeded RNG from pools sorted by id, then shuffled so a
    `--limit` still mixes the kinds."""
    rng = random.Random(seed)
    pools: dict[str, list[dict]] = {}
    for item in dataset:
        if "check" in item and len(item["check"]["task"]) <= MAX_TASK_CHARS:
            pools.setdefault(stratum(item), []).append(item)
    splits: dict[str, list[dict]] = {"dev": [], "test": []}
    for name, (dev, test) in STRATA.items():
        drawn = rng.sample(sorted(pools[name], key=lambda i: item_id(i["prompt"])), dev + test)
        splits["dev"] += drawn[:dev]
        splits["test"] += drawn[dev:]
    for items in splits.values():
        rng.shuffle(items)
    return splits


def write_items(path: Path, seed: int) -> dict:
    """(Re)generate the committed item file; the same seed and dataset give the same bytes."""
    splits = pick_items(data.load(), seed)
    doc = {
        "about": "items of python -m cluster.bench.ensemble: id = sha256(prompt)[:16] of a router.training.data item; "
                 f"regenerate with --write-items --seed {seed}",
        "seed": seed,
        "max_task_chars": MAX_TASK_CHARS,
        "splits": {split: [{"id": item_id(i["prompt"]), "source": i["source"], "kind": i["check"]["kind"]} for i in items]
                   for split, items in splits.items()},
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def load_items(path: Path, dataset: Iterable[dict]) -> dict[str, list[Item]]:
    """The committed splits resolved against the dataset; every id must resolve."""
    by_id = {item_id(i["prompt"]): i for i in dataset if "check" in i}
    splits = json.loads(Path(path).read_text())["splits"]
    missing = [f"{split}:{row['id']}" for split, rows in splits.items() for row in rows if row["id"] not in by_id]
    if missing:
        raise ItemsError(f"{len(missing)} item(s) of {path} are not checkable items of the dataset {data.dataset_path()}: "
                         f"{', '.join(missing[:5])}; rebuild the dataset or regenerate the file (--write-items)")
    return {split: [Item(row["id"], by_id[row["id"]]["source"], by_id[row["id"]]["check"]) for row in rows]
            for split, rows in splits.items()}


# --- requests ------------------------------------------------------------------------------------------------------

def all_methods(names: list[str]) -> list[str]:
    """The methods that send requests; `single_best` and `oracle` are computed from the pinned ones."""
    return ["single", *(f"pinned:{n}" for n in names), *ENSEMBLE_MODES]


def prompt_of(item: Item) -> str:
    """The labelling command's prompt: the task, and for code the instruction to answer in one Python block."""
    return item.check["task"] + (CODE_INSTRUCTION if KIND_GROUP[item.kind] == "code" else "")


def screen_counts(items: list[Item], quality: Callable[[str], dict[str, float]], gaps: list[float],
                  most: int = 3) -> dict[str, dict[str, int]]:
    """How many specialists routemoa's screen keeps at each score_gap, from the scorer's predicted quality alone (an
    idle cluster): {gap: {kept: items}}. Gaps that keep the same sets need no requests to tell apart."""
    counts: dict[str, dict[str, int]] = {}
    for item in items:
        predicted = quality(prompt_of(item))
        ranked = sorted(predicted, key=predicted.__getitem__, reverse=True)
        for gap in gaps:
            kept = str(len(near_best(ranked, predicted, gap, most)))
            row = counts.setdefault(f"{gap:g}", {})
            row[kept] = row.get(kept, 0) + 1
    return {gap: dict(sorted(row.items())) for gap, row in counts.items()}


def ensemble_of(method: str) -> tuple[str, dict] | None:
    """(mode, request overrides) of an ensemble method: `routemoa`, or a variant for tuning on dev such as
    `routemoa+score_gap=0.5+early_stop=1`; None for `single` and the pinned methods."""
    mode, *settings = method.split("+")
    if mode not in ENSEMBLE_MODES:
        return None
    overrides = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        if name not in spec.FIELDS - {"mode"}:
            raise ValueError(f"{method!r}: {name!r} is not a router.ensemble field ({', '.join(sorted(spec.FIELDS - {'mode'}))})")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    return mode, overrides


def request_body(item: Item, method: str, proposer_cap: int | None = None) -> dict:
    """The labelling command's prompt and max_tokens; an ensemble's proposers get the same max_tokens, cut to
    `proposer_cap` (the profile's `proposer_max_tokens` is the most a request may ask for), or the profile's default."""
    max_tokens = MAX_TOKENS[item.kind]
    router: dict = {"cache": False}
    model = method.removeprefix("pinned:") if method.startswith("pinned:") else "auto"
    if ensemble := ensemble_of(method):
        mode, overrides = ensemble
        router["ensemble"] = {"mode": mode, **({"max_tokens": min(max_tokens, proposer_cap)} if proposer_cap else {}),
                              **overrides}
    return {"model": model, "messages": [{"role": "user", "content": prompt_of(item)}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, "router": router}


def comment_trace(line: str) -> dict | None:
    """A whole decision trace sent as an SSE comment (`: ... {"mode": ..., "answered_by": ...}`), if this is one."""
    start = line.find("{")
    try:
        trace = json.loads(line[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        return None
    return trace if isinstance(trace, dict) and {"mode", "answered_by"} <= trace.keys() else None


def read_stream(lines: Iterable[str], start: float) -> tuple[str, str, dict | None, dict | None, float | None]:
    """(status, text, usage, trace from a comment, ttft_s) of an SSE chat stream whose request left at `start`."""
    status, parts, usage, trace, ttft = "ok", [], None, None, None
    for line in lines:
        if line.startswith(":"):
            trace = comment_trace(line) or trace
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        chunk = json.loads(line[5:])
        if "error" in chunk:
            status = f"stream error: {chunk['error'].get('message')}"
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            if content := (choice.get("delta") or {}).get("content"):
                ttft = ttft if ttft is not None else time.perf_counter() - start
                parts.append(content)
    return status, "".join(parts), usage, trace, ttft


def post_chat(base_url: str, body: dict, timeout_s: float = 900.0) -> Sent:
    """One streamed chat completion timed by this client. A refused connection raises: a dead router stops the run
    instead of filling the store with errors."""
    start = time.perf_counter()
    try:
        with httpx.stream("POST", f"{base_url.rstrip('/')}/v1/chat/completions", json=body, timeout=timeout_s) as response:
            header = response.headers.get("x-route-decision")
            trace = json.loads(header) if header else None
            if response.status_code != 200:
                response.read()
                error = f"http {response.status_code}: {response.text[:300]}"
                return Sent(error, "", None, trace, time.perf_counter() - start, None)
            status, text, usage, streamed_trace, ttft = read_stream(response.iter_lines(), start)
    except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        return Sent(f"{type(exc).__name__}: {exc}", "", None, None, time.perf_counter() - start, None)
    return Sent(status, text, usage, streamed_trace or trace, time.perf_counter() - start, ttft)


def result(split: str, item: Item, method: str, sent: Sent) -> dict:
    """The stored line: graded outcome, cost and the trace fields the report reads (a failed call is a wrong answer)."""
    trace = sent.trace or {}
    ensemble = trace.get("ensemble") or {}
    ok = sent.status == "ok"
    calls = ensemble.get("calls", 1 + len(trace.get("failed") or [])) if trace else None  # a degraded ensemble: 1 call
    return {
        "split": split, "item": item.id, "method": method, "kind": item.kind,
        "status": "ok" if ok else "error", "error": None if ok else sent.status,
        "correct": ok and grade(sent.text, item.check), "text": sent.text,
        "usage": sent.usage or ensemble.get("usage"), "answered_by": trace.get("answered_by"), "calls": calls,
        "call_tokens": [[call["model"], call.get("prompt_tokens", 0) + call.get("completion_tokens", 0)]
                        for stage in ensemble.get("stages") or [] for call in stage.get("calls") or []],
        "early_stop": ensemble.get("early_stop"), "kept": (ensemble.get("screen") or {}).get("kept"),
        "degraded": ensemble.get("degraded"), "wall_s": round(sent.wall_s, 3),
        "ttft_s": None if sent.ttft_s is None else round(sent.ttft_s, 3),
    }


# --- store and runner ----------------------------------------------------------------------------------------------

def write_results(records: Iterable[dict], split: str, path: Path) -> int:
    """The results a report of `split` reads (its split's and dev's, which picks single_best) without answer texts:
    committed beside the report, they let anyone re-report it (`--report --store PATH`) without the cache."""
    rows = sorted((r for r in records if r["split"] in {split, "dev"}), key=lambda r: (r["split"], r["item"], r["method"]))
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "text"}) + "\n" for r in rows))
    return len(rows)


def read_store(path: Path) -> dict[tuple[str, str, str], dict]:
    """The stored results by (split, item, method), the last line winning; a line cut by a kill is skipped (resent)."""
    records = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[(r["split"], r["item"], r["method"])] = r
    return records


def run(items: dict[str, list[Item]], methods: list[str], store: Path, base_url: str, send: Send = post_chat,
        max_s: float | None = None, retry_errors: bool = False, proposer_cap: int | None = None) -> int:
    """Send what the store lacks, item by item (all methods of an item together, so a stopped run stays paired), one
    request at a time; stops before the next request once `max_s` have passed. Returns the results stored."""
    stored = read_store(store)
    jobs = [(split, item, method) for split, rows in items.items() for item in rows for method in methods
            if (split, item.id, method) not in stored or (retry_errors and stored[(split, item.id, method)]["status"] != "ok")]
    store.parent.mkdir(parents=True, exist_ok=True)
    start, done = time.monotonic(), 0
    for split, item, method in tqdm(jobs, desc="ensemble bench", file=sys.stderr):
        if max_s is not None and time.monotonic() - start >= max_s:
            break
        line = json.dumps(result(split, item, method, send(base_url, request_body(item, method, proposer_cap))))
        with store.open("a") as f:
            f.write(line + "\n")
        done += 1
    return done


# --- report --------------------------------------------------------------------------------------------------------

def by_method(records: Iterable[dict], split: str) -> dict[str, dict[str, dict]]:
    table: dict[str, dict[str, dict]] = {}
    for r in records:
        if r["split"] == split:
            table.setdefault(r["method"], {})[r["item"]] = r
    return table


def answered_by_all(table: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Only the items every method answered: a partial run (or pinned results run ahead of the ensembles) must not
    compare methods on different items."""
    shared = set.intersection(*(set(rows) for rows in table.values())) if table else set()
    return {method: {item: r for item, r in rows.items() if item in shared} for method, rows in table.items()}


def paired_ci(a: dict[str, bool], b: dict[str, bool], resamples: int = RESAMPLES,
              seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """95 % paired-bootstrap interval of accuracy(a) - accuracy(b) over the items both answered."""
    shared = sorted(a.keys() & b.keys())
    if not shared:
        return None
    diff = np.array([float(a[i]) - float(b[i]) for i in shared])
    means = diff[np.random.default_rng(seed).integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def total_tokens(usage: dict | None) -> int:
    """Prompt + completion tokens (an ensemble trace's usage has no total)."""
    usage = usage or {}
    return usage.get("total_tokens") or usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)


def priced(record: dict, params: dict[str, float | None]) -> float | None:
    """Tokens x billions of parameters: each call of the trace's stages at its model's size, the rest of the usage
    (a final call outside the stages, or a single call) at the answering model's; None when a size is unknown."""
    rest = total_tokens(record["usage"]) - sum(tokens for _, tokens in record["call_tokens"])
    calls = [*record["call_tokens"], *([[record["answered_by"], rest]] if rest > 0 else [])]
    sizes = [params.get(model) for model, _ in calls]
    return None if None in sizes else sum(size * tokens for size, (_, tokens) in zip(sizes, calls))


def _mean(values: list) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def accuracy_by_kind(records: list[dict]) -> dict[str, float]:
    """Accuracy per kind group (number, code, letter): where a method wins and loses, which the total hides."""
    groups: dict[str, list[bool]] = {}
    for r in records:
        groups.setdefault(KIND_GROUP[r["kind"]], []).append(r["correct"])
    return {group: _mean(values) for group, values in sorted(groups.items())}


def summarise(results: dict[str, dict], params: dict[str, float | None]) -> dict:
    """One method's figures; latencies over answered requests, accuracy and tokens over all (an error is wrong)."""
    records = list(results.values())
    ok = [r for r in records if r["status"] == "ok"]
    tokens = sum(total_tokens(r["usage"]) for r in records)
    prices = [priced(r, params) for r in records]
    price = None if None in prices or not records else round(sum(prices), 1)
    ensembles = [r for r in ok if ensemble_of(r["method"])]
    return {
        "n": len(records), "errors": len(records) - len(ok), "accuracy": _mean([r["correct"] for r in records]),
        "accuracy_by_kind": accuracy_by_kind(records),
        "tokens_total": tokens, "tokens_per_item": round(tokens / len(records), 1) if records else None,
        "tokens_x_params_b": price, "tokens_x_params_b_per_item": None if price is None else round(price / len(records), 1),
        "wall_p50_s": _percentile([r["wall_s"] for r in ok], 50), "wall_p95_s": _percentile([r["wall_s"] for r in ok], 95),
        "ttft_p50_s": _percentile([r["ttft_s"] for r in ok if r["ttft_s"] is not None], 50),
        "calls_per_item": _mean([r["calls"] for r in records if r["calls"] is not None]),
        "early_stop_rate": _mean([bool(r["early_stop"]) for r in ensembles]),
        "degraded_rate": _mean([r["degraded"] is not None for r in ensembles]),
    }


def correct_by_item(results: dict[str, dict]) -> dict[str, bool]:
    return {item: r["correct"] for item, r in results.items()}


def single_best(dev: dict[str, dict[str, dict]], names: list[str]) -> str | None:
    """The pinned specialist most accurate on the dev split (ties: the first in the profile)."""
    accuracy = {n: _mean([r["correct"] for r in dev[f"pinned:{n}"].values()]) for n in names if dev.get(f"pinned:{n}")}
    return max(accuracy, key=accuracy.get) if accuracy else None


def oracle(pinned: dict[str, dict[str, bool]]) -> dict[str, bool]:
    """Right when any specialist pinned alone was right, over the items every pinned specialist in the store answered."""
    shared = set.intersection(*(set(c) for c in pinned.values())) if pinned else set()
    return {item: any(c[item] for c in pinned.values()) for item in shared}


def scorer_hits(routemoa: dict[str, dict], pinned: dict[str, dict[str, bool]], best: dict[str, bool]) -> dict:
    """Did routemoa's screen keep a specialist that was right alone? Over items where some specialist was right."""
    right = [[pinned.get(m, {}).get(item, False) for m in r["kept"][:3]]
             for item, r in routemoa.items() if r["kept"] and best.get(item)]
    return {"scorer_hit_items": len(right), "scorer_top1_hit": _mean([hits[0] for hits in right]),
            "scorer_top3_hit": _mean([any(hits) for hits in right])}


def _goal(value: float | None, rule: str, target: float, judged: bool = True) -> dict:
    met = None if value is None or not judged else (value <= target if rule == "<=" else value >= target)
    return {"value": None if value is None else round(value, 4), "rule": rule, "target": target, "met": met}


def _ratio(methods: dict, key: str) -> float | None:
    a, b = methods.get("routemoa", {}).get(key), methods.get(BASELINE, {}).get(key)
    return a / b if a is not None and b else None


def goals(methods: dict[str, dict], judged: bool = True) -> dict:
    """The issue's goals for routemoa: cheaper and faster than moa at no real loss, and no worse than one model;
    `met` stays null unless `judged` (every item of the split answered by every method)."""
    routemoa = methods.get("routemoa", {})
    ci = routemoa.get("accuracy_diff_vs_moa_ci")
    best = methods.get("single_best", {}).get("accuracy")
    margin = routemoa["accuracy"] - best if routemoa.get("accuracy") is not None and best is not None else None
    return {
        "routemoa_tokens_per_item_vs_moa": _goal(_ratio(methods, "tokens_per_item"), "<=", 0.40, judged),
        "routemoa_wall_p50_vs_moa": _goal(_ratio(methods, "wall_p50_s"), "<=", 0.50, judged),
        "routemoa_accuracy_diff_vs_moa_ci_low": _goal(ci[0] if ci else None, ">=", -0.03, judged),
        "routemoa_accuracy_minus_single_best": _goal(margin, ">=", 0.0, judged),
    }


def report(records: Iterable[dict], params: dict[str, float | None], profile: str, split: str = "test",
           planned: int | None = None) -> dict:
    """Every method's figures on the items of `split` every method answered, single_best chosen on dev, the oracle and
    scorer hits (when every specialist was pinned) and the goals (judged only once all `planned` items are in: a
    partial run's ratios are figures, not verdicts)."""
    records = list(records)
    results = answered_by_all(by_method(records, split))
    names = list(params)
    pinned = {n: correct_by_item(results[f"pinned:{n}"]) for n in names if f"pinned:{n}" in results}
    correct = {m: correct_by_item(r) for m, r in results.items()}
    methods = {m: summarise(r, params) for m, r in results.items()}
    best = single_best(by_method(records, "dev"), names)
    if best and f"pinned:{best}" in results:
        methods["single_best"] = {**methods[f"pinned:{best}"], "model": best}
        correct["single_best"] = correct[f"pinned:{best}"]
    if len(pinned) == len(names):  # any specialist right alone: with one missing, it would be a lower bound
        correct["oracle"] = oracle(pinned)
        methods["oracle"] = {**dict.fromkeys(summarise({}, params)), "n": len(correct["oracle"]),
                             "accuracy": _mean(list(correct["oracle"].values()))}
    for m in methods:
        methods[m]["accuracy_diff_vs_moa_ci"] = paired_ci(correct[m], correct.get(BASELINE, {}))
    if "routemoa" in results and "oracle" in correct:
        methods["routemoa"].update(scorer_hits(results["routemoa"], pinned, correct["oracle"]))
    items = len({item for rows in results.values() for item in rows})
    judged = planned is None or items >= planned
    return {"items": items, "planned_items": planned, "profile": profile, "split": split, "single_best": best,
            "methods": methods, "goals": goals(methods, judged)}


def write_plot(doc: dict, path: Path) -> None:
    """Accuracy against tokens per item and against wall p50: one point per method, told apart by colour and marker
    in a shared legend (points at equal accuracy overlap, labels beside them did too); single_best names its pinned
    specialist's point; the oracle as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    shown = [(name, m) for name, m in doc["methods"].items() if name != "single_best" and m["accuracy"] is not None]
    for ax, key, label in zip(axes, ("tokens_per_item", "wall_p50_s"), ("tokens per item", "wall p50 (s)")):
        for i, (name, m) in enumerate(shown):
            text = f"{name} = single_best" if name == f"pinned:{doc['single_best']}" else name
            if m[key] is not None:
                ax.scatter(m[key], m["accuracy"], s=40, marker="osv^DPX*h<>p"[i % 12], color=f"C{i % 10}", label=text,
                           alpha=0.85)
        if (ceiling := doc["methods"].get("oracle", {}).get("accuracy")) is not None:
            ax.axhline(ceiling, color="grey", linestyle="--", linewidth=0.8, label="oracle (any pinned right)")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.suptitle(f"ensembles on {doc['profile']}: {doc['split']} split, {doc['items']} items")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- command line --------------------------------------------------------------------------------------------------

def parse_methods(text: str | None, names: list[str]) -> list[str]:
    """A comma list; `pinned` stands for every pinned specialist; an ensemble mode may carry `+field=value` settings."""
    known = all_methods(names)
    if not text:
        return known
    pinned = [m for m in known if m.startswith("pinned:")]
    methods = [m for part in text.split(",") for m in (pinned if part == "pinned" else [part])]
    if unknown := [m for m in methods if m not in known and not ensemble_of(m)]:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(known)} (or `pinned`; a mode may add "
                         "`+score_gap=0.5` and other router.ensemble fields)")
    return methods


def screen(name: str, profile: Profile, items: list[Item], gaps: str) -> dict:
    """`--screen`: the screen's counts per gap, with where each specialist's predicted quality comes from."""
    from router.routing import Router, quality_sources

    router = Router.from_profile(profile)

    def quality(prompt: str) -> dict[str, float]:
        return {name: row["quality"] for name, row in router.decide(prompt).trace["specialists"].items()}

    return {"profile": name, "items": len(items), "quality_sources": quality_sources(profile, router.scorer),
            "kept_by_score_gap": screen_counts(items, quality, [float(g) for g in gaps.split(",")],
                                               min(3, profile.ensemble.proposers))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.ensemble", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="local", help="the served profile: its specialists are the pinned methods")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="the running router (this machine only)")
    parser.add_argument("--items", type=Path, default=ITEMS_PATH)
    parser.add_argument("--store", type=Path, help="results JSONL (default .cache/bench/ensemble/<profile>.jsonl)")
    parser.add_argument("--split", choices=("dev", "test"), default="test")
    parser.add_argument("--methods", help="comma list (default all): single, pinned (every pinned:<name>), pinned:<name>, "
                        + ", ".join(ENSEMBLE_MODES) + "; a mode may carry router.ensemble settings: routemoa+score_gap=0.5")
    parser.add_argument("--limit", type=int, help="only the first N items of the split")
    parser.add_argument("--max-minutes", type=float, help="stop cleanly (before the next request) after this long")
    parser.add_argument("--proposer-max-tokens", type=int,
                        help="cap on the proposers' max_tokens, else the item's (default cap: the profile's proposer_max_tokens)")
    parser.add_argument("--retry-errors", action="store_true", help="resend stored results that failed")
    parser.add_argument("--report", action="store_true", help="report what the store holds instead of sending; the "
                        "results it read go beside the report, without answer texts, to re-report with --store")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks/ensemble.json"),
                        help="report JSON; the PNG goes next to it")
    parser.add_argument("--screen", help="comma list of score_gap values: print how many specialists routemoa's screen "
                        "keeps on the split's items at each, from the scorer alone (no router needed), then exit")
    parser.add_argument("--write-items", action="store_true", help="regenerate --items from the dataset with --seed, then exit")
    parser.add_argument("--seed", type=int, default=0, help="with --write-items")
    args = parser.parse_args(argv)
    if urlsplit(args.base_url).hostname not in LOOPBACK:
        parser.error("the benchmark targets this machine only (--base-url http://127.0.0.1:…)")
    args.store = args.store or default_cache_dir() / "bench" / "ensemble" / f"{args.profile}.jsonl"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.write_items:
        doc = write_items(args.items, args.seed)
        print(f"wrote {args.items}: " + ", ".join(f"{s} {len(rows)}" for s, rows in doc["splits"].items()))
        return
    profile = load_profile(args.profile)
    if args.screen:
        print(json.dumps(screen(args.profile, profile, load_items(args.items, data.load())[args.split][: args.limit],
                                args.screen), indent=2))
        return
    if args.report:
        params = {s.name: s.parameters_b for s in profile.specialists}
        planned = len(json.loads(args.items.read_text())["splits"][args.split])
        records = list(read_store(args.store).values())
        doc = report(records, params, args.profile, args.split, planned)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(doc, indent=2) + "\n")
        write_plot(doc, args.output.with_suffix(".png"))
        write_results(records, args.split, args.output.with_suffix(".results.jsonl"))
        print(json.dumps(doc, indent=2))
        return
    try:
        methods = parse_methods(args.methods, profile.names)
        items = load_items(args.items, data.load())[args.split][: args.limit]
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    max_s = args.max_minutes * 60 if args.max_minutes is not None else None
    cap = args.proposer_max_tokens or profile.ensemble.proposer_max_tokens
    try:
        done = run({args.split: items}, methods, args.store, args.base_url, max_s=max_s, retry_errors=args.retry_errors,
                   proposer_cap=cap)
    except httpx.ConnectError as exc:
        sys.exit(f"error: no router at {args.base_url} ({exc}); what was answered is in {args.store}")
    print(f"stored {done} result(s) in {args.store}; --report summarises them")


if __name__ == "__main__":
    main()
