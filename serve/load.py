"""Router-side load per specialist (in flight, EWMA latency): the live term of the `auto` policy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from router.routing import Load

EWMA_ALPHA = 0.2


@dataclass
class _Counters:
    in_flight: int = 0
    ewma_latency_s: float | None = None


class LoadTracker:
    """Counts requests this ingress replica has in flight to each specialist and how long they take."""

    def __init__(self, names: list[str]) -> None:
        self._counters = {name: _Counters() for name in names}

    @contextmanager
    def track(self, name: str) -> Iterator[None]:
        counters = self._counters[name]
        counters.in_flight += 1
        start = time.monotonic()
        try:
            yield
        finally:
            counters.in_flight -= 1
            elapsed = time.monotonic() - start
            previous = counters.ewma_latency_s
            counters.ewma_latency_s = elapsed if previous is None else (1 - EWMA_ALPHA) * previous + EWMA_ALPHA * elapsed

    def snapshot(self) -> dict[str, Load]:
        return {name: Load(in_flight=c.in_flight, ewma_latency_s=c.ewma_latency_s) for name, c in self._counters.items()}
