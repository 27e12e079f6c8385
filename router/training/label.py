"""The labeling command: ask specialists checkable questions through an OpenAI-compatible API (our router,
`model` = specialist name), grade the replies and write a prompt x model quality matrix (RouteLLM CSV layout:
`prompt`, one boolean column per specialist, plus `source` and `domain`), usable by `train --outcomes`."""

from __future__ import annotations

import csv
import json
import random
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from router.catalog import REPO_ROOT, default_cache_dir, load_profile
from router.training.data import load
from router.training.graders import grade

KIND_SHARE = {"number": 0.3, "letter": 0.4, "humaneval": 0.15, "leetcode": 0.15}
CODE_INSTRUCTION = "\n\nReply with the complete Python code in one ```python block."
MAX_TOKENS = {"number": 512, "letter": 32, "humaneval": 512, "leetcode": 768}


def sample_items(n: int, seed: int) -> list[dict]:
    """A seeded, kind-stratified sample of checkable items."""
    rng = random.Random(seed)
    by_kind: dict[str, list[dict]] = {}
    for item in load():
        if "check" in item:
            by_kind.setdefault(item["check"]["kind"], []).append(item)
    picked = []
    for kind, share in KIND_SHARE.items():
        pool = by_kind.get(kind, [])
        picked += rng.sample(pool, min(len(pool), round(n * share)))
    return picked


def complete(base_url: str, model: str, prompt: str, max_tokens: int, timeout_s: float) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
    request = urllib.request.Request(f"{base_url.rstrip('/')}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.load(response)["choices"][0]["message"]["content"] or ""


def ask_and_grade(base_url: str, model: str, item: dict, timeout_s: float) -> bool:
    """One graded answer; a failed call counts as a wrong answer (the model could not serve it)."""
    check = item["check"]
    prompt = check["task"] + (CODE_INSTRUCTION if check["kind"] in ("humaneval", "leetcode") else "")
    try:
        return grade(complete(base_url, model, prompt, MAX_TOKENS[check["kind"]], timeout_s), check)
    except OSError:
        return False


def label(profile_name: str, specialists: list[str] | None, n: int, base_url: str, out: Path | None, seed: int,
          timeout_s: float, concurrency: int = 4) -> dict:
    names = specialists or load_profile(profile_name).names
    items = sample_items(n, seed)
    out = out or default_cache_dir() / "router" / "quality" / f"{profile_name}.csv"
    results: dict[str, list[bool]] = {}
    with ThreadPoolExecutor(concurrency) as pool:
        for name in names:
            jobs = pool.map(lambda item: ask_and_grade(base_url, name, item, timeout_s), items)
            results[name] = list(tqdm(jobs, total=len(items), desc=name))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "source", "domain", *names])
        for i, item in enumerate(items):
            writer.writerow([item["prompt"], item["source"], item["domain"], *(results[name][i] for name in names)])
    kinds = Counter(item["check"]["kind"] for item in items)
    accuracy = {name: round(sum(v) / max(1, len(v)), 4) for name, v in results.items()}
    matrix = out.resolve()  # the report is committed: name the matrix relative to the checkout when it is inside it
    return {"matrix": str(matrix.relative_to(REPO_ROOT) if matrix.is_relative_to(REPO_ROOT) else matrix), "n": len(items), "kinds": dict(kinds), "accuracy": accuracy}
