"""Engine start-up: cut what a new replica does before it can serve, and let it start ahead of serving engines."""

from __future__ import annotations

import logging
import os

import psutil
from ray.llm._internal.common.callbacks.base import CallbackBase
from ray.serve.llm import LLMServer

SERVING_PRIORITY_ENV = "ROUTER_SERVING_ENGINE_CPU_PRIORITY"  # the profile's `serving_engine_cpu_priority`
LOW_NICENESS = 19  # the lowest niceness; Ray starts every worker (a new replica too) at 15

logger = logging.getLogger(__name__)


class PreparedWeightsCallback(CallbackBase):
    """Skip Ray's per-node "download model files" task for weights `prepare` already wrote to local disk.

    That task starts a fresh Ray worker process (~10 s of imports on 2 cores) only to find the folder is there;
    a scale-up waits on it. The weights of every prepared profile are on the node's disk by construction.
    """

    async def on_before_node_init(self) -> None:
        self.ctx.run_init_node = False


def _lower_thread(tid: int, priority: str) -> bool:
    """One thread to niceness 19 (`low`) or SCHED_IDLE (`idle`); False if it already was (never raised)."""
    if priority == "idle":
        if os.sched_getscheduler(tid) == os.SCHED_IDLE:
            return False
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        return True
    if os.getpriority(os.PRIO_PROCESS, tid) >= LOW_NICENESS:
        return False
    os.setpriority(os.PRIO_PROCESS, tid, LOW_NICENESS)
    return True


def lower_cpu_priority(priority: str, root: int | None = None) -> int:
    """Lower every thread of `root`'s process tree (default: this process) to `low` or `idle`; returns how many
    changed. Linux keeps the priority per thread and a thread inherits it only when created, so the engine's OpenMP
    and EngineCore threads that already exist are set one by one. Lowering needs no privilege."""
    if priority not in ("low", "idle"):
        raise ValueError(f"CPU priority {priority!r}: expected 'low' or 'idle'")
    top = psutil.Process(root)
    changed = 0
    for process in (top, *top.children(recursive=True)):
        try:
            threads = process.threads()
        except psutil.Error:  # exited meanwhile
            continue
        for thread in threads:
            try:
                changed += _lower_thread(thread.id, priority)
            except (ProcessLookupError, PermissionError):
                continue
    return changed


class YieldingLLMServer(LLMServer):
    """Ray Serve LLM's `LLMServer` whose engine, once it serves, yields the CPU to replicas that are still starting.

    On a CPU node the engines share the cores, and a new replica's start (three processes importing torch and vLLM)
    competing as an equal with a loaded engine takes several times its idle start (docs/operations.md, "CPU priority
    of serving engines")."""

    async def start(self) -> None:
        await super().start()
        if priority := os.environ.get(SERVING_PRIORITY_ENV):
            changed = lower_cpu_priority(priority)
            logger.info("engine serving: %d threads of its process tree now at CPU priority %r", changed, priority)
