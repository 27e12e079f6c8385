"""Router-side load per specialist (in flight, EWMA latency): the live term of the `auto` policy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from router.routing import Load

EWMA_ALPHA = 0.2
DOWN_FOR_S = 15.0  # after a specialist fails, `auto` tries it last for this long (Serve restarts it meanwhile)


@dataclass
class _Counters:
    in_flight: int = 0
    ewma_latency_s: float | None = None
    failed_at: float = float("-inf")


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

    def mark_failed(self, name: str) -> None:
        self._counters[name].failed_at = time.monotonic()

    def is_down(self, name: str) -> bool:
        """Failed within the last DOWN_FOR_S seconds: a circuit breaker, so `auto` does not wait on a dead engine."""
        return time.monotonic() - self._counters[name].failed_at < DOWN_FOR_S

    def snapshot(self) -> dict[str, Load]:
        return {name: Load(in_flight=c.in_flight, ewma_latency_s=c.ewma_latency_s) for name, c in self._counters.items()}
