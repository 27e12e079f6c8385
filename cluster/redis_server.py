"""A local Redis (Debian's `redis-server`) for the quota counters: 127.0.0.1 only, nothing persisted, bounded memory.

It is our child in its own session (cluster/daemon.py); its pid is written to <state_dir>/redis.pid and `stop` signals
that pid (SIGTERM, then SIGKILL), so a Ctrl-C at the terminal reaches only us; a later `start` on that state dir first
stops what a crashed run left there. The port must not be Ray's GCS port (6379): the default here is 6380.
`python -m cluster.redis_server --port 6380` runs one until Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cluster import daemon
from cluster.daemon import HOST, DaemonError
from cluster.foreground import hold
from router.catalog import default_cache_dir

NAME = "redis"  # of its log and pid file in the state dir
DEFAULT_PORT = 6380
INSTALL_HINT = "apt-get install redis-server"
STOP_GRACE_S = 5.0


class RedisServerError(DaemonError):
    """redis-server is missing, could not start, or did not answer; the message says why and where its log is."""


@dataclass
class RedisServer:
    """The running server; a context manager that stops it."""

    port: int
    state_dir: Path
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float = 10) -> None:
        """Until it answers PING; fail at once, with its log's end, if it exits (a taken port)."""
        daemon.wait_ready(self.state_dir, {NAME: (self.process, partial(_answers_ping, self.port))}, timeout_s, RedisServerError)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM by pid, SIGKILL after `grace_s`; reaped, and its pid file removed."""
        daemon.stop(self.state_dir, {NAME: self.process}, grace_s)


def binary() -> str:
    if path := shutil.which("redis-server"):
        return path
    raise RedisServerError(f"redis-server is not on PATH: {INSTALL_HINT}")


def start(port: int = DEFAULT_PORT, state_dir: Path | None = None, max_memory_mb: int = 64) -> RedisServer:
    """Start redis-server on 127.0.0.1:`port` (returns at once; then `wait_ready`). Counters all carry expiries, so
    at the memory bound the least recently used are evicted rather than writes refused."""
    server = binary()
    state_dir = (state_dir or default_cache_dir() / "redis").resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    stop_leftovers(state_dir)
    daemon.check_free(NAME, port, "port (--port, or the profile's security.redis_url)", RedisServerError)
    cmd = [server, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no", "--daemonize", "no",
           "--dir", str(state_dir), "--maxmemory", f"{max_memory_mb}mb", "--maxmemory-policy", "volatile-lru"]
    return RedisServer(port, state_dir, daemon.launch(state_dir, NAME, cmd))


def stop_leftovers(state_dir: Path, grace_s: float = STOP_GRACE_S) -> None:
    """Stop the redis-server a crashed run left in `state_dir` (one still running there; a reused pid is spared)."""
    daemon.stop_leftovers(state_dir, {NAME: binary()}, grace_s)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.redis_server", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--state-dir", type=Path, default=default_cache_dir() / "redis")
    parser.add_argument("--max-memory-mb", type=int, default=64)
    ns = parser.parse_args(argv)
    hold(start(ns.port, ns.state_dir, ns.max_memory_mb), _announce, RedisServerError)


def _announce(server: RedisServer) -> None:
    server.wait_ready()
    print(f"Redis {server.url} (pid {server.pid}, state in {server.state_dir}); Ctrl-C stops it", flush=True)


if __name__ == "__main__":
    main()
