"""Per-key quotas (serve/quotas.py) against a real redis-server on a free port (cluster/redis_server.py): 429 with
OpenAI's headers, other keys unaffected, counts shared by two replicas' checkers, concurrency slots freed on finish
and by their expiry, and Redis stopped or hung: fail-open serves (after at most the timeout), fail-closed answers 503."""

import asyncio
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from limits import RateLimitItemPerMinute
from redis import Redis as SyncRedis

from cluster import redis_server
from router.catalog import Security, load_profile
from serve.auth import Gate, KeyStore, create_key
from serve.errors import APIError
from serve.quotas import Limits, Quotas
from tests.serve.test_auth import app_for, bearer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def redis(tmp_path: Path):
    with redis_server.start(free_port(), tmp_path / "redis") as server:
        server.wait_ready()
        yield server


def checker(redis, **settings) -> Quotas:
    """Quotas on this Redis, with the profile's defaults for any setting not given."""
    return Quotas(Security(auth=True, redis_url=redis.url, **settings))


def answering(redis, **settings) -> Quotas:
    """Checkers for tests that need Redis to answer: a generous timeout, so a busy test machine's slow connect is not
    taken for Redis being down (that is what the tests of a stopped or hung Redis are for)."""
    return checker(redis, redis_timeout_s=10, **settings)


def key() -> str:
    return uuid.uuid4().hex[:12]


async def refused(quotas: Quotas, key_id: str, limits: Limits) -> APIError:
    with pytest.raises(APIError) as caught:
        await quotas.admit(key_id, limits)
    return caught.value


async def settled(quotas: Quotas) -> None:
    await asyncio.gather(*quotas._settling)


def test_over_the_requests_per_minute_is_429_with_headers_and_others_unaffected(redis):
    async def run():
        quotas, tenant, other, limits = answering(redis), key(), key(), Limits(rpm=3, tpm=0, concurrent=0)
        for left in (2, 1, 0):
            assert (await quotas.admit(tenant, limits)).headers["x-ratelimit-remaining-requests"] == str(left)
        error = await refused(quotas, tenant, limits)
        assert (await quotas.admit(other, limits)).headers["x-ratelimit-remaining-requests"] == "2"
        await quotas.aclose()
        return error

    error = asyncio.run(run())
    response = error.response()
    assert response.status_code == 429
    assert error.body()["error"]["code"] == "rate_limit_exceeded" and error.body()["error"]["type"] == "rate_limit_error"
    assert response.headers["x-ratelimit-limit-requests"] == "3"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"] in ("59s", "1m0s")
    assert 55 <= int(response.headers["retry-after"]) <= 60


def test_requests_admitted_at_once_each_see_their_own_remaining_count(redis):
    """Counting and admitting is one step in Redis: eight requests at once over two replicas' checkers, five let in,
    each told a different number left."""
    async def run():
        first, second, tenant, limits = answering(redis), answering(redis), key(), Limits(rpm=5, tpm=0, concurrent=0)
        outcomes = await asyncio.gather(*((first, second)[i % 2].admit(tenant, limits) for i in range(8)),
                                        return_exceptions=True)
        await first.aclose()
        await second.aclose()
        return outcomes

    outcomes = asyncio.run(run())
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    assert sorted(a.headers["x-ratelimit-remaining-requests"] for a in admitted) == ["0", "1", "2", "3", "4"]
    assert [o.status for o in outcomes if isinstance(o, APIError)] == [429] * 3


def test_tokens_are_charged_when_a_request_ends_and_then_refuse(redis):
    async def run():
        quotas, tenant, other, limits = answering(redis), key(), key(), Limits(rpm=0, tpm=100, concurrent=0)
        first = await quotas.admit(tenant, limits)
        assert first.headers["x-ratelimit-remaining-tokens"] == "100"
        quotas.settle(first, {"prompt_tokens": 70, "completion_tokens": 20})
        await settled(quotas)
        second = await quotas.admit(tenant, limits)
        assert second.headers["x-ratelimit-remaining-tokens"] == "10"
        quotas.settle(second, {"total_tokens": 50})  # the last request may overdraw; it is charged in full
        await settled(quotas)
        error = await refused(quotas, tenant, limits)
        assert (await quotas.admit(other, limits)).headers["x-ratelimit-remaining-tokens"] == "100"
        await quotas.aclose()
        return error

    response = asyncio.run(run()).response()
    assert response.status_code == 429
    assert response.headers["x-ratelimit-limit-tokens"] == "100"
    assert response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert 1 <= int(response.headers["retry-after"]) <= 60


def test_two_replicas_share_the_counts_through_redis(redis):
    async def run():
        first, second, tenant, limits = answering(redis), answering(redis), key(), Limits(rpm=2, tpm=50, concurrent=0)
        await first.admit(tenant, limits)
        admission = await second.admit(tenant, limits)
        second.settle(admission, {"total_tokens": 10})
        await settled(second)
        assert (await refused(first, tenant, limits)).status == 429  # the requests the other replica let in count
        tokens = await first.tokens.get_window_stats(RateLimitItemPerMinute(limits.tpm), "tokens", tenant)
        assert tokens.remaining == 40  # and the tokens it charged
        await first.aclose()
        await second.aclose()

    asyncio.run(run())


def test_concurrency_slots_are_freed_on_finish_and_after_their_ttl(redis):
    async def run():
        quotas, tenant, limits = answering(redis, slot_ttl_s=1), key(), Limits(rpm=0, tpm=0, concurrent=2)
        held = [await quotas.admit(tenant, limits) for _ in range(2)]
        error = await refused(quotas, tenant, limits)
        assert error.status == 429 and "2 concurrent" in error.message and error.retry_after == 1
        quotas.settle(held[0], {})
        await settled(quotas)
        await quotas.admit(tenant, limits)  # the finished request's slot is free again; now 2 are held, none settled
        await refused(quotas, tenant, limits)
        await asyncio.sleep(1.2)  # as if their replica had died: the slots expire
        await quotas.admit(tenant, limits)
        await quotas.aclose()

    asyncio.run(run())


def test_a_refused_request_gives_its_concurrency_slot_back(redis):
    async def run():
        quotas, tenant, limits = answering(redis), key(), Limits(rpm=1, tpm=0, concurrent=5)
        await quotas.admit(tenant, limits)
        await refused(quotas, tenant, limits)  # over rpm: the slot it took is freed
        assert await quotas.redis.zcard(f"specialist-router:slots:{tenant}") == 1  # only the first request's
        await quotas.aclose()

    asyncio.run(run())


def test_redis_down_fails_open_then_quotas_resume(redis, caplog):
    async def run():
        quotas, tenant, limits = checker(redis, redis_down="open"), key(), Limits(rpm=1, tpm=0, concurrent=1)
        await quotas.admit(tenant, limits)
        redis.stop()
        began = time.monotonic()
        admissions = [await quotas.admit(tenant, limits) for _ in range(3)]  # over rpm and concurrency: served anyway
        assert time.monotonic() - began < 3  # no retry backoff stalls a request
        assert all(a.limits is None for a in admissions) and quotas.store_failures == 3
        quotas.settle(admissions[0], {"total_tokens": 5})  # nothing to charge or free
        await quotas.aclose()

    asyncio.run(run())
    assert sum("quota store (Redis) unreachable" in r.message for r in caplog.records) == 1  # warned once per interval


def test_redis_down_fails_closed_with_503_and_retry_after(redis):
    async def run():
        quotas = checker(redis, redis_down="closed")
        redis.stop()
        error = await refused(quotas, key(), Limits(rpm=10, tpm=0, concurrent=0))
        await quotas.aclose()
        return error

    response = asyncio.run(run()).response()
    assert response.status_code == 503 and int(response.headers["retry-after"]) == 5
    assert b"quota store is unreachable" in response.body


def test_a_hung_redis_holds_a_request_only_for_the_timeout_then_serves_it_without_quotas(redis, tmp_path: Path):
    """Redis frozen (SIGSTOP): it still accepts connections but never answers; a request waits the profile's
    `redis_timeout_s`, no more."""
    profile = load_profile("tiny").model_copy(deep=True)
    profile.security = profile.security.model_copy(update={"auth": True, "key_store": str(tmp_path / "keys.json"),
                                                           "redis_url": redis.url, "redis_timeout_s": 1})

    async def run():
        quotas = Gate.from_profile(profile).quotas
        os.kill(redis.pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            admission = await asyncio.wait_for(quotas.admit(key(), Limits(rpm=10, tpm=0, concurrent=1)), 10)
            waited = time.monotonic() - began
        finally:
            os.kill(redis.pid, signal.SIGCONT)
        await quotas.aclose()
        return admission, waited, quotas.store_failures

    admission, waited, failures = asyncio.run(run())
    assert admission.limits is None and failures == 1
    assert 1 <= waited < 3, f"waited {waited:.2f} s on a hung Redis with a 1 s timeout"


def test_quotas_come_back_when_redis_does(redis, tmp_path: Path):
    async def run():
        quotas, tenant, limits = answering(redis), key(), Limits(rpm=1, tpm=0, concurrent=0)
        redis.stop()
        assert (await quotas.admit(tenant, limits)).limits is None
        with redis_server.start(redis.port, tmp_path / "again") as again:
            again.wait_ready()
            assert (await quotas.admit(tenant, limits)).limits == limits
            assert (await refused(quotas, tenant, limits)).status == 429
        await quotas.aclose()

    asyncio.run(run())


def test_over_http_a_429_carries_the_headers_and_streams_are_charged(redis, tmp_path: Path):
    store = tmp_path / "keys.json"
    limited, limited_key = create_key(store, "billing", rpm=2)
    other, _ = create_key(store, "search")
    gate = Gate(KeyStore(store), answering(redis), Limits(rpm=10, tpm=1000, concurrent=4))
    with TestClient(app_for(gate)) as http:
        ok = http.post("/v1/chat/completions", headers=bearer(limited), json={"model": "auto", "stream": True})
        assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-requests"] == "1"
        assert ok.headers["x-ratelimit-limit-tokens"] == "1000"
        assert http.post("/v1/chat/completions", headers=bearer(limited), json={"model": "auto"}).status_code == 200
        over = http.post("/v1/chat/completions", headers=bearer(limited), json={"model": "auto"})
        assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limit_exceeded"
        assert over.headers["retry-after"].isdigit() and over.headers["x-ratelimit-remaining-requests"] == "0"
        served = http.post("/v1/chat/completions", headers=bearer(other), json={"model": "auto"})
        assert served.status_code == 200 and served.headers["x-ratelimit-limit-requests"] == "10"
    # the stream's usage and the JSON answer's (12 tokens each) were charged when they ended; the 429 charged nothing
    assert charged_tokens(redis.url, limited_key.id, expected=24) == 24


def charged_tokens(url: str, key_id: str, expected: int) -> int:
    """The key's token counter in Redis, once it reaches `expected` (settling is asynchronous) or 5 s passed."""
    with SyncRedis.from_url(url) as client:
        deadline = time.monotonic() + 5
        while (charged := sum(int(client.get(n) or 0) for n in client.keys(f"*tokens/{key_id}/*"))) < expected \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        return charged


def test_a_missing_redis_server_says_how_to_install_it(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(redis_server.shutil, "which", lambda _: None)
    with pytest.raises(redis_server.RedisServerError, match="apt-get install redis-server"):
        redis_server.start(free_port(), tmp_path)
