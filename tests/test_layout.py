"""The layout's boundaries: what runs per request stays small and knows nothing of Ray, the lab or training.

`router/` (top level) is imported by every ingress replica; `serve/` is the Ray Serve application. Neither may
pull in the benchmarks, load tests, simulator or training, and the per-request router must stay free of Ray and
vLLM so it can be trained, evaluated and simulated offline. Checked on the source (every import, lazy ones too)
and once for real, by importing the serving application in a fresh interpreter.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PER_REQUEST_ROUTER = sorted(p for p in (REPO / "router").glob("*.py") if p.name != "__main__.py")
SERVE = sorted((REPO / "serve").glob("*.py"))
LAB = ("cluster", "router.training", "matplotlib")
FORBIDDEN = {"router": ("ray", "vllm", "serve", *LAB), "serve": LAB}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def violations(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", PER_REQUEST_ROUTER + SERVE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_request_path_imports_nothing_it_must_not(path: Path):
    assert violations(path, FORBIDDEN[path.parent.name]) == []


def test_the_boundary_check_sees_a_forbidden_import(tmp_path: Path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("import json\n\ndef f():\n    from router.training.train import train\n    import ray.serve\n")
    assert violations(sneaky, FORBIDDEN["router"]) == ["ray.serve", "router.training.train", "router.training.train.train"]


def test_the_serving_application_loads_without_the_lab():
    """Importing the app builder (Ray Serve, vLLM, the router) loads no training, benchmark or plotting module."""
    probe = ("import sys, serve.app; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cluster', 'matplotlib') or m.startswith('router.training')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
