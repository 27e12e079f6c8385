"""An opt-in, bounded cache of answers to deterministic chat requests (profile `ensemble.cache_entries`).

Only a request that pins its outcome is cached: temperature 0 given explicitly, one choice, no logprobs. The key
is the whole body but the transport fields (stream, stream_options) and the request's own cache switch, so the
same question with any other parameter is a different entry. Streamed and plain requests share entries; entries
are filled from complete (non-streamed) answers. Least recently used entries go first.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

from router.ensemble.calls import Reply

TRANSPORT = ("stream", "stream_options")


def cache_key(body: dict[str, Any]) -> str | None:
    """The entry a request maps to, or None when its answer is not deterministic."""
    if body.get("temperature") != 0 or body.get("n", 1) != 1 or body.get("logprobs") or body.get("seed") is not None:
        return None
    router = {k: v for k, v in (body.get("router") or {}).items() if k != "cache"} if isinstance(body.get("router"), dict) else None
    keyed = {k: v for k, v in body.items() if k not in (*TRANSPORT, "router")} | {"router": router}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ResponseCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[Reply, dict]] = OrderedDict()
        self.hits = 0

    def get(self, key: str) -> tuple[Reply, dict] | None:
        """The answer and trace stored under `key`, counting the hit."""
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            self.hits += 1
        return entry

    def put(self, key: str, reply: Reply, trace: dict) -> None:
        """Keep a complete answer (not one cut off by an error) and the decision that produced it."""
        if reply.finish_reason not in ("stop", "length"):
            return
        self.entries[key] = (reply, trace)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
