"""The fault suite: each fault is injected for real into the local cluster while mixed traffic (long streams in flight)
runs, and passes only when every request of its window ended by the contract (ledger.py), the cluster recovered within
its bound, and the fault's own checks hold. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

from cluster.local import DASHBOARD_PORT, HOST, METRICS_PORT, cli
from cluster.reliability import processes
from cluster.reliability.ledger import Ledger, send
from cluster.reliability.traffic import Traffic, chat, long_stream
from cluster.serve_status import APPLICATIONS_PATH
from router.catalog import Profile
from serve.cluster_metrics import parse_serve_metrics

RECOVERY_TIMEOUT_S = 300
PROBE_DEADLINE_S = 10
FREEZE_S = 30
CUT_DEADLINE_S = 8  # the deadline of a stream caught by the freeze: it must end then, long before the engine resumes
CUT_GRACE_S = 5
LEFT_STREAM_TOKENS = 480  # eight of these take tiny-general > 10 s to finish on its 4 batch slots
SCALE_UP_S = 45  # load far over the target's: Serve decides a scale-up within seconds (upscale_delay_s 2)
DRAIN_S = 5  # a stream whose client left is gone from its replica within this (left alone it runs > 10 s)


@dataclass
class FaultResult:
    name: str
    expect: str
    passed: bool
    recovery_s: float | None
    checks: dict[str, bool]
    requests: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "recovery_s": self.recovery_s}


@dataclass
class Suite:
    """The cluster under test and the ledger every request of the suite goes into."""

    base_url: str
    profile: Profile
    config: Path  # the Serve config `serve deploy` was given (the redeploy fault edits a copy)
    metrics_url: str = f"http://{HOST}:{METRICS_PORT}/metrics"
    dashboard_url: str = f"http://{HOST}:{DASHBOARD_PORT}"
    ledger: Ledger = field(default_factory=Ledger)

    @property
    def deadline_s(self) -> float:
        return self.profile.ingress.request_timeout_s

    @property
    def specialists(self) -> list[str]:
        return self.profile.names

    @property
    def target(self) -> str:
        """The specialist faults hit: one that autoscales if any (the scale-down fault needs it), else the last."""
        scaling = [s.name for s in self.profile.specialists
                   if s.deployment.autoscaling and s.deployment.autoscaling.max_replicas > 1]
        return (scaling or self.specialists)[-1]

    async def probe(self, client: httpx.AsyncClient, model: str) -> bool:
        entry = self.ledger.add(await send(client, chat(model, "ping", 2), PROBE_DEADLINE_S))
        return entry.kind == "completed"

    async def answering(self, client: httpx.AsyncClient, model: str, since: float) -> float | None:
        """Seconds from `since` until `model` answers a pinned request again (None: not within the bound)."""
        while time.monotonic() - since < RECOVERY_TIMEOUT_S:
            if await self.probe(client, model):
                return round(time.monotonic() - since, 1)
            await asyncio.sleep(1)
        return None

    async def replicas(self, client: httpx.AsyncClient, deployment: str) -> list[dict[str, Any]] | None:
        """The deployment's replicas as Serve's REST API lists them (state, pid); None: the API did not answer."""
        app = await self.application(client)
        return None if app is None else app["deployments"].get(deployment, {}).get("replicas", [])

    async def application(self, client: httpx.AsyncClient) -> dict[str, Any] | None:
        """The application as Serve's REST API reports it (status, deployments with their targets)."""
        try:
            response = await client.get(f"{self.dashboard_url}{APPLICATIONS_PATH}", timeout=10)
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return response.json()["applications"].get(processes.APP)

    async def until(self, check: Callable[[], Awaitable[bool]], timeout_s: float = RECOVERY_TIMEOUT_S) -> float | None:
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            if await check():
                return round(time.monotonic() - began, 1)
            await asyncio.sleep(1)
        return None

    async def running(self, client: httpx.AsyncClient, deployment: str, count: int, gone: int | None = None) -> bool:
        """Exactly `count` replicas of `deployment`, all RUNNING, and the process `gone` not among them."""
        replicas = await self.replicas(client, deployment)
        return (replicas is not None and len(replicas) == count and all(r["state"] == "RUNNING" for r in replicas)
                and gone not in {r.get("pid") for r in replicas})

    def deploy(self, config: dict[str, Any], name: str) -> None:
        path = self.config.with_name(f"{self.config.stem}-{name}.yaml")
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run([cli("serve"), "deploy", str(path), "--address", self.dashboard_url], check=True, capture_output=True,
                       timeout=120)

    def serve_config(self, **router: Any) -> dict[str, Any]:
        """The deployed config, with `router`'s options (and a broken app's args) set."""
        config = yaml.safe_load(self.config.read_text())
        app = config["applications"][0]
        if "args" in router:
            app["args"] = {**app["args"], **router.pop("args")}
        if router:
            app["deployments"] = [{"name": processes.ROUTER, **router}]
        return config


Fault = Callable[[Suite, httpx.AsyncClient], Awaitable[tuple[float | None, dict[str, bool]]]]


async def _kill(suite: Suite, client: httpx.AsyncClient, replica: bool = False) -> tuple[float | None, dict[str, bool]]:
    """SIGKILL the target's EngineCore, or the Serve replica process above it, while its streams run."""
    await asyncio.sleep(2)  # long streams are running on it
    engine = await asyncio.to_thread(processes.engine_core_of, suite.target, only=False)
    victim = engine.parent() if replica else engine
    killed_at = time.monotonic()
    victim.kill()
    recovery = await suite.answering(client, suite.target, killed_at)
    return recovery, {"recovered": recovery is not None}


async def _freeze_engine(suite: Suite, client: httpx.AsyncClient) -> tuple[float | None, dict[str, bool]]:
    """The engine stops under a stream that has started: the stream must end at its deadline (an in-band 504, then
    [DONE]), not when the engine resumes. Every replica's engine stops: autoscaling may have started a second one, and
    the stream may be on either."""
    await asyncio.sleep(2)
    engines = await asyncio.to_thread(processes.engine_cores_of, suite.target, only=False)
    tail: list[str] = []
    try:
        async with client.stream("POST", "/v1/chat/completions", json=long_stream(suite.target, LEFT_STREAM_TOKENS),
                                 headers={"x-request-timeout": f"{CUT_DEADLINE_S:g}"}) as response:
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data: "):
                    break
            for engine in engines:
                engine.suspend()
            frozen_at = time.monotonic()
            try:
                async with asyncio.timeout(CUT_DEADLINE_S + CUT_GRACE_S):  # no end by then: a hang (the check fails)
                    tail = [line async for line in lines if line]
            except TimeoutError:
                pass
        await asyncio.sleep(max(0.0, frozen_at + FREEZE_S - time.monotonic()))
    finally:
        for engine in engines:
            engine.resume()
    resumed_at = time.monotonic()
    recovery = await suite.answering(client, suite.target, resumed_at)
    error, done = tail[-2:] if len(tail) >= 2 else ("", "")
    cut = "upstream_timeout" in error and done == "data: [DONE]"
    return recovery, {"recovered": recovery is not None, "stream_cut_at_its_deadline": cut}


async def _kill_controller(suite: Suite, client: httpx.AsyncClient) -> tuple[float | None, dict[str, bool]]:
    await asyncio.sleep(2)
    old = processes.controller()
    killed_at = time.monotonic()
    old.kill()

    async def back() -> bool:
        try:
            return processes.controller().pid != old.pid and bool(await suite.replicas(client, processes.ROUTER))
        except (LookupError, httpx.HTTPError):
            return False

    recovery = await suite.until(back)
    await asyncio.sleep(max(0.0, killed_at + 5 - time.monotonic()))  # traffic flowed meanwhile
    served = sum(e.kind == "completed" for e in suite.ledger.since(killed_at).entries)
    return recovery, {"served_without_controller": served > 0, "controller_back": recovery is not None}


async def _kill_ingress_replica(suite: Suite, client: httpx.AsyncClient) -> tuple[float | None, dict[str, bool]]:
    """One of two router replicas dies: the other serves; Serve starts a new one. (Two replicas are deployed first
    when the cluster runs one; the redeploy fault leaves two.)"""
    if len(processes.replicas(processes.ROUTER)) < 2:
        await asyncio.to_thread(suite.deploy, suite.serve_config(num_replicas=2), "two-routers")
        if await suite.until(lambda: suite.running(client, processes.ROUTER, 2)) is None:
            return None, {"two_ingress_replicas": False}
    await asyncio.sleep(2)
    victim = processes.replicas(processes.ROUTER)[0]
    killed_at = time.monotonic()
    victim.kill()
    recovery = await suite.until(lambda: suite.running(client, processes.ROUTER, 2, gone=victim.pid))
    await asyncio.sleep(2)  # what was in flight has ended
    failed = suite.ledger.since(killed_at - suite.deadline_s).failures()
    return recovery, {"replaced": recovery is not None,
                      "only_requests_in_flight_on_it_failed": all(e.sent_at < killed_at for e in failed)}


def _capacity(profile: Profile) -> int:
    """Requests the specialists hold at once, running and queued."""
    return sum(s.deployment.max_ongoing_requests + max(0, s.deployment.max_queued_requests) for s in profile.specialists)


async def _burst(suite: Suite, client: httpx.AsyncClient) -> tuple[float | None, dict[str, bool]]:
    """Three times what the specialists can hold, at once: each answered or refused with a retryable 503, none lost."""
    count = 3 * _capacity(suite.profile)
    models = [*suite.specialists, "auto"]
    window = Ledger()
    entries = await asyncio.gather(*(send(client, chat(models[i % len(models)], "Tell me a story.", 16), suite.deadline_s)
                                     for i in range(count)))
    for entry in entries:
        window.add(suite.ledger.add(entry))
    ended_at = time.monotonic()
    recovery = await suite.answering(client, suite.target, ended_at)
    return recovery, {"all_ended_by_contract": not window.failures(),
                      "refusals_say_when_to_retry": window.summary()["missing_retry_after"] == 0}


async def _scale_down(suite: Suite, client: httpx.AsyncClient) -> tuple[float | None, dict[str, bool]]:
    """Load scales the target up; when it eases, Serve removes a replica while long streams still run on it. (No mixed
    traffic: it alone keeps the target above its per-replica target, and it would never scale down.)"""
    deployment = f"LLMServer:{suite.target}"
    scaling = suite.profile.specialist(suite.target).deployment.autoscaling
    if scaling is None or scaling.max_replicas < 2:
        return None, {"target_autoscales": False}
    up = await _while_streaming(suite, client, 8, suite.until(lambda: suite.running(client, deployment, 2)))
    began = time.monotonic()  # fewer streams: Serve scales down while they run on the replica it removes
    down = await _while_streaming(suite, client, 2, suite.until(lambda: suite.running(client, deployment, 1)))
    return (None if down is None else round(time.monotonic() - began, 1)), {"scaled_up": up is not None,
                                                                            "scaled_down": down is not None}


async def _while_streaming(suite: Suite, client: httpx.AsyncClient, streams: int, wait: Awaitable[float | None]) -> float | None:
    """`wait` with `streams` long streams to the target kept in flight meanwhile."""
    stop = asyncio.Event()

    async def stream() -> None:
        while not stop.is_set():
            suite.ledger.add(await send(client, long_stream(suite.target), suite.deadline_s))

    streaming = asyncio.gather(*(stream() for _ in range(streams)))
    try:
        return await wait
    finally:
        stop.set()
        await streaming


async def _disconnects(suite: Suite, client: httpx.AsyncClient) -> tuple[float | None, dict[str, bool]]:
    """Clients leave mid-stream: the engine's work for them stops within DRAIN_S; the header that would keep it going
    is refused."""
    leaving = [send(client, long_stream(suite.target, LEFT_STREAM_TOKENS), suite.deadline_s, read_events=3) for _ in range(8)]
    for entry in await asyncio.gather(*leaving):
        suite.ledger.add(entry)
    left_at = time.monotonic()

    async def drained() -> bool:
        try:
            text = (await client.get(suite.metrics_url, timeout=5)).text
        except httpx.HTTPError:
            return False
        sample = parse_serve_metrics(text, [suite.target], time.monotonic()).get(suite.target)
        return sample is not None and sample.ongoing == 0

    freed = await suite.until(drained, timeout_s=DRAIN_S)
    kept = suite.ledger.add(await send(client, long_stream(suite.target, 8), suite.deadline_s,
                                       headers={"x-request-disconnect-disabled": "1"}))
    return (None if freed is None else round(time.monotonic() - left_at, 1)), {
        "engine_work_freed": freed is not None,
        "disconnect_disabled_header_refused": kept.status == 400}


async def _redeploy(suite: Suite, client: httpx.AsyncClient) -> tuple[float | None, dict[str, bool]]:
    """A good config (a second router replica) rolls out under load; a broken one (an app argument that fails the
    build) fails while the running version keeps serving; the good one is deployed again, and autoscaling still acts."""
    await asyncio.to_thread(suite.deploy, suite.serve_config(num_replicas=2), "two-routers")
    rolled = await suite.until(lambda: suite.running(client, processes.ROUTER, 2))
    broken_at = time.monotonic()
    await asyncio.to_thread(suite.deploy, suite.serve_config(num_replicas=2, args={"profile": "no-such-profile"}), "broken")
    failed = await suite.until(lambda: _status_is(suite, client, "DEPLOY_FAILED"))
    served = sum(e.kind == "completed" for e in suite.ledger.since(broken_at).entries)
    await asyncio.to_thread(suite.deploy, suite.serve_config(num_replicas=2), "two-routers")
    restored = await suite.until(lambda: _status_is(suite, client, "RUNNING"))
    scales = await _while_streaming(suite, client, 8, suite.until(lambda: _target_at_least(suite, client, 2), SCALE_UP_S))
    return rolled, {"good_config_rolled_out": rolled is not None, "broken_config_failed": failed is not None,
                    "old_version_served_meanwhile": served > 0, "good_config_restored": restored is not None,
                    "autoscaling_after_redeploy": scales is not None}


async def _status_is(suite: Suite, client: httpx.AsyncClient, status: str) -> bool:
    app = await suite.application(client)
    return app is not None and app["status"] == status


async def _target_at_least(suite: Suite, client: httpx.AsyncClient, replicas: int) -> bool:
    """Serve's autoscaler has decided on at least `replicas` for the target (whether or not they run yet)."""
    app = await suite.application(client)
    target = (app or {}).get("deployments", {}).get(f"LLMServer:{suite.target}", {}).get("target_num_replicas")
    return target is not None and target >= replicas


async def _kill_thrice(suite: Suite, client: httpx.AsyncClient) -> tuple[float | None, dict[str, bool]]:
    """The same engine killed three times in a row: each time it comes back; the others never notice."""
    began = time.monotonic()
    recoveries = []
    for _ in range(3):
        recovery, _checks = await _kill(suite, client)
        recoveries.append(recovery)
    others = [e for e in suite.ledger.since(began).entries if e.model not in (suite.target, "auto")]
    stalled = [e for e in others if e.kind != "completed" or (not e.stream and e.seconds > 20)]
    return (max(recoveries) if None not in recoveries else None), {
        "recovered_each_time": None not in recoveries, "others_unaffected": bool(others) and not stalled}


@dataclass(frozen=True)
class FaultCase:
    run: Fault
    expect: str
    traffic: bool = True  # mixed traffic meanwhile (off where it would blur what the fault measures)


FAULTS: dict[str, FaultCase] = {
    "engine_killed_mid_stream": FaultCase(_kill, "streams on it end with an in-band error and [DONE]; auto falls "
                                                        "back; Serve restarts it"),
    "replica_actor_killed": FaultCase(partial(_kill, replica=True), "the same as an engine, one level up"),
    "engine_frozen_30s": FaultCase(_freeze_engine, "requests wait or time out with a 504 inside their deadline (a "
                                                   "started stream in-band); it answers again once resumed"),
    "controller_killed": FaultCase(_kill_controller, "traffic keeps flowing; Ray restarts the controller"),
    "burst_3x_capacity": FaultCase(_burst, "every request answered or refused with a 503 and Retry-After"),
    "client_disconnects": FaultCase(_disconnects, "the engine stops generating for clients that left; "
                                                  "x-request-disconnect-disabled is refused", traffic=False),
    "scale_down_with_streams": FaultCase(_scale_down, "streams on the replica being removed finish (graceful shutdown)",
                                         traffic=False),
    "engine_killed_three_times": FaultCase(_kill_thrice, "it recovers each time; other specialists' requests are "
                                                         "untouched"),
    "redeploy_good_and_broken": FaultCase(_redeploy, "a good config rolls out under load; a broken one fails while the "
                                                     "running version serves"),
    "ingress_replica_killed": FaultCase(_kill_ingress_replica, "the other router replica serves; Serve replaces the "
                                                               "dead one"),
}


async def run_fault(suite: Suite, name: str, workers: int = 4) -> FaultResult:
    """Traffic on, the fault, traffic off; the fault's window of the ledger decides with its checks."""
    case = FAULTS[name]
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=suite.base_url, timeout=None) as client:
        stop = asyncio.Event()
        mixed = Traffic(client, suite.ledger, suite.specialists, workers if case.traffic else 0, suite.deadline_s)
        traffic = asyncio.ensure_future(mixed.run(stop))
        try:
            recovery, checks = await case.run(suite, client)
        finally:
            stop.set()
            await traffic
    window = suite.ledger.since(began).summary()
    ended_well = window["lost"] == window["truncated_streams"] == window["server_errors"] == 0
    return FaultResult(name, case.expect, ended_well and all(checks.values()), recovery, checks, window)
