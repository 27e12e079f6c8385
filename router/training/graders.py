"""Graders of the labeling command: GSM8K-style numbers, MMLU letters, and code run against its tests in a
subprocess with a timeout, resource limits and sockets disabled."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from router.ensemble.answers import extract_code, extract_letter, extract_number

# Prepended to every program: no network from graded code (best effort, in-process).
NO_NETWORK = "import socket as _s\ndef _blocked(*a, **k):\n    raise OSError('network disabled while grading')\n_s.socket = _blocked\n_s.create_connection = _blocked\n"


def grade_number(response: str, gold: str) -> bool:
    answer = extract_number(response)
    try:
        return answer is not None and abs(float(answer) - float(gold.replace(",", ""))) < 1e-6
    except ValueError:
        return False


def grade_letter(response: str, gold: str) -> bool:
    return extract_letter(response) == gold


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (10, 10))


def run_tests(program: str, timeout_s: float = 10.0) -> bool:
    """True if the program exits 0 within the timeout, run by this Python in isolated mode in a temp dir."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graded.py"
        path.write_text(NO_NETWORK + program)
        try:
            result = subprocess.run([sys.executable, "-I", str(path)], cwd=tmp, capture_output=True, timeout=timeout_s,
                                    preexec_fn=_limits, env={"PATH": "/usr/bin:/bin"})
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0


def grade_code(response: str, check: dict, timeout_s: float = 10.0) -> bool:
    """HumanEval: the prompt + completion, then the tests; LeetCode: the class, then the shipped cases."""
    code = extract_code(response)
    if check["kind"] == "humaneval" and f"def {check['entry_point']}" not in code:
        code = check["task"] + code  # a bare body completion
    return run_tests(f"{code}\n\n{check['test']}", timeout_s)


def grade(response: str, check: dict) -> bool:
    if check["kind"] == "number":
        return grade_number(response, check["answer"])
    if check["kind"] == "letter":
        return grade_letter(response, check["answer"])
    return grade_code(response, check)
