"""What the tests of a live tiny-profile cluster share: its specialists, reading the router's answers, its engines."""

import json
import time

import httpx
import psutil

CODER, GENERAL = "tiny-coder", "tiny-general"  # windows: 256 and 512 tokens


def decision(response: httpx.Response) -> dict:
    return json.loads(response.headers["x-route-decision"])


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    if code is not None:
        assert error["code"] == code
    return error


def engine_core_of(specialist: str, settle_s: float = 60) -> psutil.Process:
    """The vLLM EngineCore process under the specialist's one Serve replica, once an earlier test's scale-up has
    drained (a fault injected into a replica that Serve is stopping would test nothing)."""
    deadline = time.monotonic() + settle_s
    while True:
        replicas = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and p.info["cmdline"][0].endswith(f"LLMServer:{specialist}")]
        cores = [c for r in replicas for c in r.children(recursive=True) if "EngineCore" in " ".join(c.cmdline())]
        if len(replicas) == len(cores) == 1:
            return cores[0]
        if time.monotonic() > deadline:
            raise LookupError(f"{specialist}: {len(replicas)} replica processes, {len(cores)} EngineCores after {settle_s} s")
        time.sleep(1)
