"""The soak: mixed traffic for minutes with a fault every `fault_every_s` (engine killed, frozen, replica killed, in
turn), and the memory of the long-lived router processes (proxy, router replicas) before and after."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx

from cluster.reliability import processes
from cluster.reliability.faults import FAULTS, Suite
from cluster.reliability.traffic import Traffic

SOAK_FAULTS = ("engine_killed_mid_stream", "engine_frozen_30s", "replica_actor_killed")
WARM_UP_S = 30  # before the first memory reading: imports and caches settle


def _router_processes() -> list:
    return [*processes.actors("ProxyActor"), *processes.replicas(processes.ROUTER)]


async def soak(suite: Suite, minutes: float, fault_every_s: float = 120, workers: int = 4) -> dict[str, Any]:
    """Returns the faults injected, their recoveries and `rss_growth_mb` of the router processes."""
    began = time.monotonic()
    injected: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=suite.base_url, timeout=None) as client:
        stop = asyncio.Event()
        traffic = asyncio.ensure_future(Traffic(client, suite.ledger, suite.specialists, workers, suite.deadline_s).run(stop))
        try:
            await asyncio.sleep(WARM_UP_S)
            watched = _router_processes()
            rss_before = processes.rss_mb(watched)
            for name in itertools.cycle(SOAK_FAULTS):
                wait = began + WARM_UP_S + fault_every_s * (len(injected) + 1) - time.monotonic()
                if time.monotonic() + wait > began + minutes * 60:
                    break
                await asyncio.sleep(max(0.0, wait))
                recovery, checks = await FAULTS[name].run(suite, client)
                injected.append({"name": name, "recovery_s": recovery, "passed": all(checks.values())})
            await asyncio.sleep(max(0.0, began + minutes * 60 - time.monotonic()))
            rss_after = processes.rss_mb(watched)
        finally:
            stop.set()
            await traffic
    return {"minutes": round((time.monotonic() - began) / 60, 1), "faults": injected,
            "rss_mb": {"before": round(rss_before, 1), "after": round(rss_after, 1)},
            "rss_growth_mb": round(rss_after - rss_before, 1), **suite.ledger.since(began).summary()}
