"""Clients of the module's tiny-profile cluster (the `tiny_url` fixture, tests/conftest.py)."""

import httpx
import openai
import pytest


@pytest.fixture(scope="module")
def http(tiny_url: str):
    with httpx.Client(base_url=tiny_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def client(tiny_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tiny_url}/v1", api_key="unused", max_retries=0)
