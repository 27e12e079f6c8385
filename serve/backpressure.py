"""A router replica's own bound on the requests it serves at once: past it, a fast JSON 503 with Retry-After rather
than a queue that grows until deadlines pass (Ray's proxy would answer its own queue's overflow in plain text)."""

from __future__ import annotations

import time
from collections import OrderedDict

from serve.errors import overloaded


class ReplicaBound:
    """Requests in this replica, by a hashable key of each; one never settled (its client left before its stream
    began) ages out after `horizon_s`, the longest a request may take, so a leak cannot shrink the bound for good."""

    def __init__(self, limit: int, horizon_s: float) -> None:
        self.limit, self.horizon_s = limit, horizon_s
        self._since: OrderedDict[object, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._since)

    def enter(self, key: object) -> None:
        now = time.monotonic()
        while self._since and next(iter(self._since.values())) < now - self.horizon_s:
            self._since.popitem(last=False)
        if len(self._since) >= self.limit:
            raise overloaded(f"this router replica is serving its limit of {self.limit} requests")
        self._since[key] = now

    def leave(self, key: object) -> None:
        self._since.pop(key, None)
