"""Mixed traffic for the fault suite and the soak: long streams that are in flight when a fault lands, short routed and
pinned requests, completions; every request goes into the ledger."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import httpx

from cluster.reliability.ledger import Ledger, send

PROMPTS = ("Write a Python function that reverses a list.", "What are the symptoms of influenza?",
           "Explain what a hash map is.", "What is 17 times 23?")


def chat(model: str, prompt: str, max_tokens: int, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "stream": stream,
            **extra}


def long_stream(model: str, max_tokens: int = 160) -> dict[str, Any]:
    """A stream that runs its full length (`ignore_eos`), so it is still in flight when a fault lands."""
    return chat(model, PROMPTS[1], max_tokens, stream=True, ignore_eos=True)


def mix(specialists: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """One round of the mixed traffic: (path, body) pairs."""
    bodies = [("/v1/chat/completions", long_stream(name)) for name in specialists]
    bodies += [("/v1/chat/completions", chat("auto", prompt, 8)) for prompt in PROMPTS]
    bodies += [("/v1/chat/completions", chat("auto", PROMPTS[0], 24, stream=True)),
               ("/v1/chat/completions", chat(specialists[0], PROMPTS[3], 8)),
               ("/v1/completions", {"model": specialists[-1], "prompt": PROMPTS[2], "max_tokens": 8})]
    return bodies


@dataclass
class Traffic:
    """`workers` clients, each sending the mix in turn (offset from each other) until stopped."""

    client: httpx.AsyncClient
    ledger: Ledger
    specialists: list[str]
    workers: int = 4
    deadline_s: float = 60

    async def run(self, stop: asyncio.Event) -> None:
        rounds = mix(self.specialists)
        await asyncio.gather(*(self._worker(stop, rounds[i % len(rounds):] + rounds[:i % len(rounds)])
                               for i in range(self.workers)))

    async def _worker(self, stop: asyncio.Event, rounds: list[tuple[str, dict[str, Any]]]) -> None:
        for path, body in itertools.cycle(rounds):
            if stop.is_set():
                return
            self.ledger.add(await send(self.client, body, self.deadline_s, path))
