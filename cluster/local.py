"""Run a profile on a local Ray cluster: prepare weights, start Ray, `serve deploy`, wait until ready, stop cleanly.

Beside Ray it starts Prometheus (scraping Ray through its service-discovery file, with the profile's alert rules) and
Alertmanager on 127.0.0.1 (cluster/observe/servers.py), unless `--no-observe`.
`make run` is `python -m cluster.local --profile local`; the tests use `LocalCluster` on the `tiny` profile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil

from cluster import redis_server
from cluster.foreground import hold
from cluster.observe import servers
from router.catalog import Profile, default_cache_dir, load_profile
from serve import proxy_middleware

HOST = "127.0.0.1"
DASHBOARD_PORT = 8265
SHUTDOWN_GRACE_S = 30
GCS_PORT = 6379
METRICS_PORT = 8080  # Prometheus text of this node: Ray Serve and vLLM engine metrics (log_engine_metrics)
# A machine's first start compiles the Qwens (torch.compile; cached in ~/.cache/vllm and /tmp/torchinductor_root):
# on a fresh 2-core machine the 1.5B was still compiling after 900 s
READY_TIMEOUT_S = 1800


class ClusterError(RuntimeError):
    """The local cluster could not be brought up; the message says why and where the logs are."""


class LocalCluster:
    """A Ray head on this machine serving one profile on 127.0.0.1; a context manager that always cleans up."""

    def __init__(self, profile: str = "local", *, port: int = 8000, ready_timeout_s: float = READY_TIMEOUT_S,
                 cache_dir: Path | None = None, observe: bool = True, alert_webhook: str | None = None, scrape_interval_s: int = 5,
                 observe_dir: Path | None = None, observability: dict | None = None):
        self.profile_name = profile
        self.profile: Profile = load_profile(profile)
        self.port = port
        self.ready_timeout_s = ready_timeout_s
        self.cache_dir = (cache_dir or default_cache_dir()).resolve()
        self.base_url = f"http://{HOST}:{port}"
        self._started_ray = False
        self.observe, self.alert_webhook, self.scrape_interval_s = observe, alert_webhook, scrape_interval_s
        # Prometheus's data and Alertmanager's notification log persist here across runs (history survives a restart)
        self.observe_dir = observe_dir or self.cache_dir / "observe" / "servers"
        self.observability = observability  # overrides of the profile's `observability` section, for this run
        self.observers: servers.Servers | None = None
        self.redis: redis_server.RedisServer | None = None
        pin_ray_auth_mode()

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        # Weight conversion (transformers) and the config writer (vLLM) run in child processes: the launcher stays
        # resident beside the engines, and importing them here kept 0.7-1.6 GB of a 24 GB machine for nothing.
        prepare = [sys.executable, "-m", "cluster.prepare", "--profile", self.profile_name, "--cache", str(self.cache_dir)]
        if subprocess.run(prepare).returncode != 0:
            raise ClusterError(f"`{' '.join(prepare)}` failed (its output is above)")
        self._start_ray()
        if self.observe:
            self._start_observers()
        if url := self.profile.security.redis_url:  # the quota counters every ingress replica shares
            port = urllib.parse.urlsplit(url).port or redis_server.DEFAULT_PORT
            self.redis = redis_server.start(port, self.cache_dir / "redis")
            self.redis.wait_ready()
        config = self.cache_dir / f"serve-{self.profile_name}.yaml"
        overrides = ["--observability", json.dumps(self.observability)] if self.observability else []
        _run([sys.executable, "-m", "serve.config", "--profile", self.profile_name, "--cache-dir", str(self.cache_dir),
              "--host", HOST, "--port", str(self.port), *overrides, "-o", str(config)])
        _run([cli("serve"), "deploy", str(config), "--address", f"http://{HOST}:{DASHBOARD_PORT}"])
        self.wait_ready()

    def _start_ray(self) -> None:
        if _ray_running():
            raise ClusterError("a Ray cluster is already running on this machine: stop it with `ray stop` first")
        cpus = max(os.cpu_count() or 1, self.profile.max_engine_replicas + 1)
        os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")  # Serve's load metrics fresh within ~1 s
        # Ray's proxy resends a request whose router replica died before answering (serve/proxy_middleware.py)
        os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", proxy_middleware.IMPORT_PATH)
        _run(
            [cli("ray"), "start", "--head", f"--num-cpus={cpus}", "--include-dashboard=true", f"--dashboard-host={HOST}",
             f"--dashboard-port={DASHBOARD_PORT}", f"--metrics-export-port={METRICS_PORT}", f"--node-ip-address={HOST}", "--disable-usage-stats"]
        )
        self._started_ray = True

    def _start_observers(self) -> None:
        """Prometheus + Alertmanager, started while the engines load so their start-up shows in the metrics too."""
        try:
            self.observers = servers.start(self.profile, self.observe_dir, servers.RAY_SD_FILE,
                                           webhook_url=self.alert_webhook, scrape_interval_s=self.scrape_interval_s,
                                           evaluation_interval_s=self.scrape_interval_s, group_wait_s=2 * self.scrape_interval_s)
            self.observers.wait_ready()
        except servers.ServersError as e:
            raise ClusterError(f"{e}\n(`--no-observe` serves without Prometheus and Alertmanager)") from None

    def wait_ready(self) -> None:
        """Poll /healthz until every specialist answers, printing who is still starting; fail on timeout."""
        start, last = time.monotonic(), None
        while time.monotonic() - start < self.ready_timeout_s:
            status, body = health(self.base_url)
            if status == 200:
                print(f"ready after {time.monotonic() - start:.0f} s: {', '.join(body['specialists'])}", flush=True)
                return
            summary = json.dumps(body.get("specialists", body)) if body else "router not up yet"
            if summary != last:
                print(f"[{time.monotonic() - start:4.0f} s] waiting: {summary}", flush=True)
                last = summary
            time.sleep(3)
        raise ClusterError(f"not ready after {self.ready_timeout_s:.0f} s; see `serve status` and /tmp/ray/session_latest/logs/serve/")

    def stop(self) -> None:
        with _uninterruptible():
            if self.observers is not None:
                self.observers.stop()
                self.observers = None
            if self.redis is not None:
                self.redis.stop()
                self.redis = None
            if self._started_ray:
                self._stop()

    def _stop(self) -> None:
        workers = _ray_descendants()
        try:  # graceful first, bounded: engines that are stuck must not keep the machine busy
            subprocess.run(
                [cli("serve"), "shutdown", "-y", "--address", f"http://{HOST}:{DASHBOARD_PORT}"], capture_output=True, timeout=SHUTDOWN_GRACE_S
            )
        except subprocess.TimeoutExpired:
            print(f"serve shutdown took over {SHUTDOWN_GRACE_S} s; forcing", flush=True)
        subprocess.run([cli("ray"), "stop", "--force"], capture_output=True, timeout=120)
        _kill_survivors(workers)
        self._started_ray = False


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while the cluster stops: a second Ctrl-C, or a `timeout` wrapper passing the first
    one on again, cut the cleanup short and left vLLM engines running without Ray (2.3 GB each, found on this machine)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def pin_ray_auth_mode() -> None:
    """One auth mode for every ray/serve process we start or connect from.

    Ray 2.60 turns token auth on for a new head once any `ray.init` has left ~/.ray/auth_token behind, while
    the `serve` CLI then sends no token ("Missing authentication token"). The local cluster's dashboard and
    HTTP listen on 127.0.0.1; export RAY_AUTH_MODE=token (and a token) to opt in instead.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def health(base_url: str) -> tuple[int, dict]:
    """(status, body) of GET /healthz; (0, {}) while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read())
        except ValueError:
            return e.code, {}
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


def _ray_descendants() -> list[psutil.Process]:
    """The cluster's daemons and every process under them, vLLM's EngineCore children included.

    Only one Ray head can own the GCS port, and `start` refuses to run beside another, so these are ours.
    """
    daemons = [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("raylet", "gcs_server")]
    return daemons + [child for daemon in daemons for child in _children(daemon)]


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _kill_survivors(processes: list[psutil.Process]) -> None:
    """`ray stop` orphans EngineCore processes (which then spin) and now and then leaves gcs_server up: kill by PID."""
    alive = [p for p in processes if p.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=10)


def _ray_running() -> bool:
    """A Ray head already owns the GCS port (asking `ray status` instead takes ~40 s to give up)."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, GCS_PORT)) == 0


def cli(name: str) -> str:
    """The `ray`/`serve` CLI of this interpreter's environment, whatever PATH says."""
    return str(Path(sys.executable).parent / name)


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise ClusterError(f"`{' '.join(cmd)}` failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def _print_usage(cluster: LocalCluster) -> None:
    example = cluster.profile.specialists[0].name
    watch = (f"""
Prometheus {cluster.observers.prometheus_url} (alerts: /alerts)  Alertmanager {cluster.observers.alertmanager_url}
Ray dashboard http://{HOST}:{DASHBOARD_PORT}; dashboard PNGs: python -m cluster.observe render --out DIR""" if cluster.observers else "")
    open_notice = "" if cluster.profile.security.auth else """
WARNING: API keys are off (security.auth: false): anything that reaches this port is served, without quotas.
  Keys and quotas: docs/security.md."""
    print(
        f"""
Serving profile '{cluster.profile_name}' on {cluster.base_url}/v1  (models: auto, {', '.join(cluster.profile.names)})
  curl {cluster.base_url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "auto", "messages": [{{"role": "user", "content": "Write a Python function that reverses a string."}}]}}' -i
  pin a specialist with "model": "{example}"; routing decision in the x-route-decision header, and the whole record
  at {cluster.base_url}/v1/router/decisions/<the response's x-request-id>.{watch}{open_notice}
Ctrl-C stops the cluster.""",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.local", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="local")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for every specialist")
    parser.add_argument("--no-observe", dest="observe", action="store_false", help="no Prometheus and Alertmanager beside Ray")
    parser.add_argument("--alert-webhook", help="URL Alertmanager posts alerts to (default: its UI and API only)")
    ns = parser.parse_args(argv)
    try:
        hold(LocalCluster(ns.profile, port=ns.port, ready_timeout_s=ns.ready_timeout, observe=ns.observe,
                          alert_webhook=ns.alert_webhook), _print_usage, ClusterError)
    finally:
        print("stopped.", flush=True)

if __name__ == "__main__":
    main()
