"""Bearer API keys per tenant (docs/security.md): the key store file, and the gate every request passes.

A key is `sr-` + 256 random bits; the store keeps only its SHA-256 digest, so a leaked store file lets no one in. The
ingress re-reads the store when the file changes, so a revoked key stops working within a request, no restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from router.catalog import Profile, Security, default_cache_dir
from serve.errors import forbidden, unauthorized
from serve.quotas import Admission, Limits, Quotas

log = logging.getLogger("ray.serve")

PREFIX = "sr-"
KEY_PATTERN = re.compile(r"^sr-[A-Za-z0-9_-]{43}$")  # token_urlsafe(32): 43 characters
Role = Literal["tenant", "admin"]


def default_store() -> Path:
    return default_cache_dir() / "keys.json"


def store_path(security: Security) -> Path:
    """The profile's key store: `key_store` (relative to the cache dir), else the default."""
    return default_cache_dir() / security.key_store if security.key_store else default_store()


def digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: never the key itself, only its digest. `id` names it in listings and `revoke`."""

    id: str
    tenant: str
    role: Role
    sha256: str
    created: float
    revoked: bool = False
    rpm: int | None = None  # quota overrides; None = the profile's
    tpm: int | None = None
    concurrent: int | None = None

    def limits(self, defaults: Limits) -> Limits:
        return Limits(rpm=defaults.rpm if self.rpm is None else self.rpm, tpm=defaults.tpm if self.tpm is None else self.tpm,
                      concurrent=defaults.concurrent if self.concurrent is None else self.concurrent)


def read_keys(path: Path) -> list[ApiKey]:
    if not path.exists():
        return []
    return [ApiKey(**entry) for entry in json.loads(path.read_text())["keys"]]


def write_keys(path: Path, keys: list[ApiKey]) -> None:
    """Replace the store atomically (readers see the old file or the new one, never half) with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        json.dump({"version": 1, "keys": [asdict(k) for k in keys]}, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time, so two admins creating keys at once both keep theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def create_key(path: Path, tenant: str, role: Role = "tenant", **quotas: int | None) -> tuple[str, ApiKey]:
    """A new key for `tenant`: returns the raw key (shown once, never stored) and its stored entry."""
    raw = PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=secrets.token_hex(6), tenant=tenant, role=role, sha256=digest(raw), created=time.time(), **quotas)
    with _locked(path):
        write_keys(path, [*read_keys(path), key])
    return raw, key


def revoke_key(path: Path, key_id: str) -> ApiKey:
    with _locked(path):
        keys = read_keys(path)
        if not any(k.id == key_id for k in keys):
            raise KeyError(key_id)
        keys = [replace(k, revoked=True) if k.id == key_id else k for k in keys]
        write_keys(path, keys)
    return next(k for k in keys if k.id == key_id)


class KeyStore:
    """The store as the ingress sees it: re-read whenever the file changes, the last good copy kept if it breaks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._keys: list[ApiKey] = []

    def keys(self) -> list[ApiKey]:
        try:
            stat = self.path.stat()
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            self._seen = seen
            try:
                self._keys = read_keys(self.path)
            except (ValueError, TypeError, KeyError) as e:
                log.error("key store %s is unreadable, keeping the keys read before: %s", self.path, e)
            if seen is None:
                log.error("key store %s does not exist: every request is refused (python -m cluster.keys create)", self.path)
        return self._keys

    def find(self, raw_key: str) -> ApiKey | None:
        """The key whose digest matches, comparing every stored digest in constant time."""
        presented = digest(raw_key)
        found = None
        for key in self.keys():
            if hmac.compare_digest(key.sha256, presented):
                found = key
        return found


def bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Gate:
    """What a request passes before it is served: its key (401, 403 on an admin route), then its quotas (429).
    With `security.auth` off it lets everything through."""

    def __init__(self, store: KeyStore | None, quotas: Quotas | None = None, defaults: Limits = Limits(0, 0, 0)) -> None:
        self.store, self.quotas, self.defaults = store, quotas, defaults

    @classmethod
    def from_profile(cls, profile: Profile) -> Gate:
        security = profile.security
        if not security.auth:
            return cls(None)
        quotas = Quotas(security) if security.redis_url else None
        store = KeyStore(store_path(security))
        return cls(store, quotas, Limits(security.rpm, security.tpm, security.concurrent))

    def identify(self, authorization: str | None, admin: bool = False) -> ApiKey | None:
        """The caller's key, or a 401 (no, malformed, unknown or revoked key) or 403 (a tenant on an admin route)."""
        if self.store is None:
            return None
        raw = bearer(authorization)
        if raw is None:
            raise unauthorized("Missing API key.")
        if not KEY_PATTERN.match(raw):
            raise unauthorized("Malformed API key.")
        key = self.store.find(raw)
        if key is None:
            raise unauthorized("Incorrect API key provided.")
        if key.revoked:
            raise unauthorized("This API key has been revoked.")
        if admin and key.role != "admin":
            raise forbidden("This route needs an admin key.")
        return key

    async def admit(self, authorization: str | None) -> Admission | None:
        """An inference request: its key, then its quotas; None when auth is off."""
        key = self.identify(authorization)
        if key is None:
            return None
        admission = await self.quotas.admit(key.id, key.limits(self.defaults)) if self.quotas else Admission(key.id)
        admission.tenant = key.tenant
        return admission

    @property
    def store_failures(self) -> int:
        """Quota-store (Redis) calls that failed since start: requests served without quotas, or refused."""
        return self.quotas.store_failures if self.quotas is not None else 0

    def settle(self, admission: Admission | None, usage: dict[str, Any]) -> None:
        """The request ended (streams and disconnects too): charge its tokens, free its concurrency slot."""
        if self.quotas is not None:
            self.quotas.settle(admission, usage)
