"""API keys, per-key quotas and request limits end to end on real parts: the `tiny-secure` profile (tiny's engines behind
two router ingress replicas) on Ray Serve, a real Redis holding the quota counters both replicas share, real HTTP."""

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cluster.local import LocalCluster
from router.catalog import default_cache_dir, load_profile
from serve.auth import create_key, revoke_key, store_path
from tests.serve.tiny import CODER, GENERAL, assert_openai_error

pytestmark = pytest.mark.cluster

PROFILE = load_profile("tiny-secure")
HI = {"model": CODER, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 2}
CANARY = "canary-prompt-4f1c9e"
QUOTA_TENANT = f"team-q-{uuid.uuid4().hex[:8]}"  # this run's: the decision log keeps earlier runs' lines


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    """Raw keys by name, in a fresh store; the generous ones have their own quotas so other tests do not use theirs up."""
    store = store_path(PROFILE.security)
    store.unlink(missing_ok=True)
    made = {"admin": create_key(store, "ops", "admin", rpm=1000)[0], "tenant": create_key(store, "team-a", rpm=1000)[0],
            "quota": create_key(store, QUOTA_TENANT)[0], "other": create_key(store, "team-b", rpm=1000)[0]}
    raw, revoked = create_key(store, "team-gone", rpm=1000)
    revoke_key(store, revoked.id)
    return {**made, "revoked": raw}


@pytest.fixture(scope="module")
def url(keys) -> Iterator[str]:
    with LocalCluster("tiny-secure", ready_timeout_s=600, observe=False) as cluster:
        yield cluster.base_url


def post(url: str, key: str | None, body: dict, **headers: str) -> httpx.Response:
    auth = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={**auth, **headers}, timeout=60)


def test_no_wrong_or_revoked_key_is_a_401_and_healthz_stays_open(url: str, keys: dict[str, str]):
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
    for key in (None, "sr-" + "x" * 43, "not-a-key", keys["revoked"]):
        assert_openai_error(post(url, key, HI), 401, "invalid_api_key")
    assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 401
    assert post(url, keys["tenant"], HI).status_code == 200


def test_the_decision_log_needs_the_admin_key(url: str, keys: dict[str, str]):
    served = post(url, keys["tenant"], HI, **{"x-request-id": "secure-1"})
    assert served.status_code == 200
    time.sleep(2)  # the other ingress replica may hold the line: each flushes its log once a second
    lookup = f"{url}/v1/router/decisions/secure-1"
    assert_openai_error(httpx.get(lookup, headers={"authorization": f"Bearer {keys['tenant']}"}, timeout=30), 403, "forbidden")
    record = httpx.get(lookup, headers={"authorization": f"Bearer {keys['admin']}"}, timeout=30).json()
    assert record["tenant"] == "team-a" and record["status"] == 200


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_the_api_description_needs_the_admin_key(url: str, keys: dict[str, str], path: str):
    assert_openai_error(httpx.get(f"{url}{path}", timeout=30), 401, "invalid_api_key")
    assert_openai_error(httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {keys['tenant']}"}, timeout=30), 403,
                        "forbidden")
    assert httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {keys['admin']}"}, timeout=30).status_code == 200


def test_a_key_over_its_requests_per_minute_gets_429_on_either_replica_and_others_are_unaffected(url: str,
                                                                                                  keys: dict[str, str]):
    """rpm 5 on the profile: five pass and one is refused, two at a time so Serve spreads them over both replicas."""
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: post(url, keys["quota"], HI), range(6)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [429]
    refused = next(a for a in answers if a.status_code == 429)
    assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "5" and refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert {a.headers["x-ratelimit-remaining-requests"] for a in answers if a.status_code == 200} == {"0", "1", "2", "3", "4"}
    assert post(url, keys["other"], HI).status_code == 200
    time.sleep(2)  # each replica flushes its decision log once a second
    replicas = {p.name for p in (default_cache_dir() / "observe" / "decisions").glob("decisions-*.jsonl")
                if f'"tenant":"{QUOTA_TENANT}"' in p.read_text()}
    assert len(replicas) == 2, f"the quota key's requests reached {replicas}: one replica cannot show the sharing"


def test_concurrent_requests_over_the_keys_limit_are_refused_and_slots_come_back(url: str):
    store = store_path(PROFILE.security)
    raw = create_key(store, "team-c", rpm=1000)[0]  # concurrent: 2 from the profile
    long = {**HI, "model": GENERAL, "max_tokens": 450, "ignore_eos": True, "stream": True}  # seconds on tiny's engines
    with ThreadPoolExecutor(3) as pool:
        running = [pool.submit(post, url, raw, long) for _ in range(2)]
        time.sleep(0.5)
        third = post(url, raw, HI)
        assert [r.result().status_code for r in running] == [200, 200]
    assert_openai_error(third, 429, "rate_limit_exceeded")
    assert post(url, raw, HI).status_code == 200  # both slots were released when the streams ended


@pytest.mark.parametrize(("body", "header", "param"), [
    ({**HI, "n": 5}, {}, "n"),
    ({**HI, "stop": [str(i) for i in range(17)]}, {}, "stop"),
    ({**HI, "stop": ["x" * 300]}, {}, "stop"),
    ({**HI, "logprobs": True, "top_logprobs": 21}, {}, None),
    (HI, {"x-request-timeout-seconds": "9999"}, None),
    (HI, {"x-request-disconnect-disabled": "?1"}, None),
    (HI, {"serve_multiplexed_model_id": "m"}, None),
])
def test_requests_over_a_limit_or_with_a_platform_header_are_400(url: str, keys: dict[str, str], body, header, param):
    response = post(url, keys["tenant"], body, **header)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] in ("limit_exceeded", "reserved_header", "invalid_request")
    assert param is None or error["param"].split(".")[0] == param  # vLLM's schema may refuse first (`stop.str`)


def test_no_raw_key_or_prompt_text_is_kept(url: str, keys: dict[str, str]):
    assert post(url, keys["tenant"], {**HI, "messages": [{"role": "user", "content": CANARY}]}).status_code == 200
    time.sleep(2)  # the decision log flushes each second
    store = store_path(PROFILE.security).read_text()
    assert not any(raw in store for raw in keys.values())
    kept = [default_cache_dir() / "observe" / "decisions", Path("/tmp/ray/session_latest/logs")]
    for folder in kept:
        for path in folder.rglob("*"):
            if path.is_file() and path.stat().st_size < 50 << 20:
                text = path.read_text(errors="replace")
                assert CANARY not in text, f"the prompt is in {path}"
                assert not any(raw in text for raw in keys.values()), f"a raw key is in {path}"
