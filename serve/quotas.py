"""Per-key quotas that every ingress replica shares through one Redis: requests per minute, tokens per minute and
requests in flight (docs/security.md).

Requests use a moving window (no burst at a window's edge): one Redis script counts and admits in one step, so two
requests at once never read the same `remaining`. Tokens use the `limits` library's fixed window: a request's tokens
are known only when it ends, so they are charged then, always in full (a moving window refuses a charge larger than
what is left, and stores one entry per token); a key whose window is spent is refused until it resets. Requests in
flight are a Redis sorted set of slots per key, each with its own expiry, so a replica that dies holding slots cannot
leak them past `slot_ttl_s`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.catalog import Security
from serve.errors import rate_limited, unavailable

log = logging.getLogger("ray.serve")

KEY_PREFIX = "specialist-router"
WARN_EVERY_S = 60.0
STORE_DOWN_RETRY_S = 5
STORE_ERRORS = (StorageError, RedisError, OSError, asyncio.TimeoutError)

# Redis's own clock, so replicas with skewed clocks agree on what has expired: the first lines of each script below.
REDIS_NOW_MS = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
"""

# KEYS[1]: the key's slots (sorted set: slot -> expiry in ms); ARGV: limit, slot, ttl in ms. -1 = full, else slots held.
ACQUIRE_SLOT = REDIS_NOW_MS + """redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return -1 end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""

# KEYS[1]: the key's requests of the last minute (sorted set: request -> time in ms); ARGV: limit, request, window ms.
# Returns {1 admitted / 0 refused, requests in the window, ms until the oldest leaves it}.
COUNT_REQUEST = REDIS_NOW_MS + """local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
local count, admitted = redis.call('ZCARD', KEYS[1]), 0
if count < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], window)
  count, admitted = count + 1, 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {admitted, count, tonumber(oldest[2]) + window - now_ms}
"""
WINDOW_MS = 60_000


@dataclass(frozen=True)
class Limits:
    """One key's quotas; 0 = unlimited."""

    rpm: int
    tpm: int
    concurrent: int


@dataclass
class Admission:
    """A request let in: whose it is, the concurrency slot it holds until it ends, the rate-limit headers it carries."""

    key_id: str
    tenant: str = ""
    limits: Limits | None = None  # None: no quotas (none configured, or Redis down and failing open)
    slot: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def duration(seconds: float) -> str:
    """OpenAI's form of the x-ratelimit-reset-* headers: `45s`, `1m30s`."""
    whole = max(0, math.ceil(seconds))
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


def total_tokens(usage: dict[str, Any]) -> int:
    return int(usage.get("total_tokens") or usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))


class Quotas:
    """Admits a key's request against its quotas and settles it when it ends; counters live in Redis."""

    def __init__(self, security: Security) -> None:
        """Settings from the profile's `security` (its defaults are the only ones); `redis_timeout_s` bounds each Redis
        call and connection, without retry: a hung Redis must not hold a request longer."""
        timeout_s = security.redis_timeout_s
        pool = redis.asyncio.ConnectionPool.from_url(security.redis_url, socket_timeout=timeout_s,
                                                     socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        storage = RedisStorage(f"async+{security.redis_url}", implementation="redispy", connection_pool=pool,
                               wrap_exceptions=True, key_prefix=KEY_PREFIX)
        self.tokens = FixedWindowRateLimiter(storage)
        self.redis = redis.asyncio.Redis(connection_pool=pool)
        self.acquire_slot = self.redis.register_script(ACQUIRE_SLOT)
        self.count_request = self.redis.register_script(COUNT_REQUEST)
        self.redis_down, self.slot_ttl_ms = security.redis_down, int(security.slot_ttl_s * 1000)
        self.store_failures = 0  # Redis calls that failed: each one a request served without quotas (open) or refused
        self._warned_at = -math.inf
        self._settling: set[asyncio.Task] = set()

    async def admit(self, key_id: str, limits: Limits) -> Admission:
        """Let the request in, or raise 429 (over a quota) or, Redis down and failing closed, 503."""
        try:
            return await self._admit(key_id, limits)
        except STORE_ERRORS as e:
            self._store_failed(e)
            if self.redis_down == "closed":
                raise unavailable("the quota store is unreachable", retry_after=STORE_DOWN_RETRY_S) from None
            return Admission(key_id)

    def settle(self, admission: Admission | None, usage: dict[str, Any]) -> None:
        """The request ended (answered, failed, or its client left): charge its tokens and free its slot, off the
        response's path."""
        if admission is None or admission.limits is None:
            return
        task = asyncio.get_running_loop().create_task(self._settle(admission, total_tokens(usage)))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _admit(self, key_id: str, limits: Limits) -> Admission:
        admission = Admission(key_id, limits=limits)
        if limits.tpm:
            await self._check_tokens(key_id, limits.tpm, admission.headers)
        if limits.concurrent:
            admission.slot = await self._take_slot(key_id, limits.concurrent)
        try:
            if limits.rpm:
                await self._count_request(key_id, limits.rpm, admission.headers)
        except BaseException:
            await self._release(key_id, admission.slot)
            raise
        return admission

    async def _check_tokens(self, key_id: str, tpm: int, headers: dict[str, str]) -> None:
        item = RateLimitItemPerMinute(tpm)
        stats = await self.tokens.get_window_stats(item, "tokens", key_id)
        headers.update(_headers("tokens", tpm, stats.remaining, stats.reset_time))
        if stats.remaining <= 0:
            raise rate_limited(f"{tpm} tokens per minute for this key", _retry_after(stats.reset_time), headers)

    async def _take_slot(self, key_id: str, concurrent: int) -> str:
        slot = uuid.uuid4().hex
        if await self.acquire_slot(keys=[_slots_key(key_id)], args=[concurrent, slot, self.slot_ttl_ms]) < 0:
            raise rate_limited(f"{concurrent} concurrent requests for this key", 1, {})
        return slot

    async def _count_request(self, key_id: str, rpm: int, headers: dict[str, str]) -> None:
        admitted, count, reset_ms = await self.count_request(keys=[f"{KEY_PREFIX}:requests:{key_id}"],
                                                             args=[rpm, uuid.uuid4().hex, WINDOW_MS])
        reset_time = time.time() + reset_ms / 1000
        headers.update(_headers("requests", rpm, rpm - count, reset_time))
        if not admitted:
            raise rate_limited(f"{rpm} requests per minute for this key", _retry_after(reset_time), headers)

    async def _settle(self, admission: Admission, tokens: int) -> None:
        assert admission.limits is not None
        try:
            if admission.limits.tpm and tokens:
                await self.tokens.hit(RateLimitItemPerMinute(admission.limits.tpm), "tokens", admission.key_id, cost=tokens)
        except STORE_ERRORS as e:
            self._store_failed(e)
        await self._release(admission.key_id, admission.slot)

    async def _release(self, key_id: str, slot: str | None) -> None:
        """Free a concurrency slot; if Redis is down, its expiry frees it later."""
        if slot is None:
            return
        try:
            await self.redis.zrem(_slots_key(key_id), slot)
        except STORE_ERRORS as e:
            self._store_failed(e)

    def _store_failed(self, error: BaseException) -> None:
        self.store_failures += 1
        if time.monotonic() - self._warned_at >= WARN_EVERY_S:
            self._warned_at = time.monotonic()
            action = "serving without quotas" if self.redis_down == "open" else "refusing requests (503)"
            log.warning("quota store (Redis) unreachable, %s: %s (%d failures so far)", action, error, self.store_failures)

    async def aclose(self) -> None:
        await asyncio.gather(*self._settling, return_exceptions=True)
        await self.redis.aclose(close_connection_pool=True)


def _slots_key(key_id: str) -> str:
    return f"{KEY_PREFIX}:slots:{key_id}"


def _retry_after(reset_time: float) -> int:
    return max(1, math.ceil(reset_time - time.time()))


def _headers(kind: str, limit: int, remaining: int, reset_time: float) -> dict[str, str]:
    return {f"x-ratelimit-limit-{kind}": str(limit), f"x-ratelimit-remaining-{kind}": str(max(0, remaining)),
            f"x-ratelimit-reset-{kind}": duration(reset_time - time.time())}
