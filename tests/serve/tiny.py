"""What the tests of a live tiny-profile cluster share: its specialists, reading the router's answers (their engines: cluster/reliability/processes.py)."""

import json

import httpx

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
