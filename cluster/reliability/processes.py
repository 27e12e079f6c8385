"""Find the local cluster's processes to inject faults into: Serve replicas, their vLLM engines, the controller, the proxy.

Ray names an actor's process `ray::<class>` and appends the method it is running (`ray::ServeReplica:app:dep.method`),
so a replica is matched by its prefix up to that dot.
"""

from __future__ import annotations

import re
import time

import psutil

APP = "specialists"  # serve.config.APP_NAME (not imported: cluster code reading processes needs no Serve config)
ROUTER = "router"


def _title(process: psutil.Process) -> str:
    try:
        cmdline = process.cmdline()
    except psutil.Error:
        return ""
    return cmdline[0] if cmdline else ""


def actors(pattern: str) -> list[psutil.Process]:
    """Every live process whose Ray title matches `pattern` (a regex on the title up to the running method)."""
    regex = re.compile(rf"ray::{pattern}(\.|$)")
    return [p for p in psutil.process_iter() if regex.match(_title(p))]


def replicas(deployment: str) -> list[psutil.Process]:
    """The processes of a deployment's replicas: `router`, or a specialist's `LLMServer:<name>`."""
    return actors(re.escape(f"ServeReplica:{APP}:{deployment}"))


def specialist_replicas(specialist: str) -> list[psutil.Process]:
    return replicas(f"LLMServer:{specialist}")


def engine_cores(replica: psutil.Process) -> list[psutil.Process]:
    try:
        return [c for c in replica.children(recursive=True) if "EngineCore" in " ".join(c.cmdline())]
    except psutil.Error:
        return []


def engine_cores_of(specialist: str, settle_s: float = 60, only: bool = True) -> list[psutil.Process]:
    """The vLLM EngineCores under the specialist's replicas once one is up; with `only`, once a scale-up has drained to
    one replica (a fault injected into a replica that Serve is stopping would test nothing)."""
    deadline = time.monotonic() + settle_s
    while True:
        found = specialist_replicas(specialist)
        cores = [c for r in found for c in engine_cores(r)]
        if cores and (not only or len(found) == len(cores) == 1):
            return cores
        if time.monotonic() > deadline:
            raise LookupError(f"{specialist}: {len(found)} replica processes, {len(cores)} EngineCores after {settle_s} s")
        time.sleep(1)


def engine_core_of(specialist: str, settle_s: float = 60, only: bool = True) -> psutil.Process:
    """The specialist's one EngineCore (`engine_cores_of`); with `only` off, the first replica's when it has several."""
    return engine_cores_of(specialist, settle_s, only)[0]


def controller() -> psutil.Process:
    found = actors("ServeController")
    if len(found) != 1:
        raise LookupError(f"{len(found)} ServeController processes")
    return found[0]


def rss_mb(processes: list[psutil.Process]) -> float:
    """Resident memory of `processes` together (the ones that are gone count 0)."""
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20
