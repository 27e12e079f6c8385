"""The load test's prompts: mixed roles from the router's dataset, each cut to fit every specialist it may reach.

A cut by characters alone is not enough: 600 characters of some prompts take more tokens than a 512-token window
has room for next to the answer, and such a request is the client's error (a 400), not the load a test means
to send (a clean-clone CI run's tiny step drew one at its 1,500-request bound).
"""

from __future__ import annotations

import random
from pathlib import Path

from router.training import data
from router.catalog import Specialist

PROMPT_CHARS = 600  # the workload's prompt size; a prompt is cut further only where a window needs it


def mixed_prompts(n: int, seed: int, reachable: list[Specialist], cache_dir: Path, max_tokens: int) -> list[dict]:
    """n prompts, the four domains in equal shares, each fitting any of `reachable` with `max_tokens` to answer."""
    rng = random.Random(seed)
    by_domain: dict[str, list[dict]] = {}
    for item in data.load():
        by_domain.setdefault(item["domain"], []).append(item)
    domains = sorted(by_domain)
    picked = [rng.choice(by_domain[domains[i % len(domains)]]) for i in range(n)]
    fitters = [WindowFit(spec, cache_dir, max_tokens) for spec in reachable]
    prompts = []
    for item in picked:
        prompt = item["prompt"][:PROMPT_CHARS]
        for fit in fitters:
            prompt = fit(prompt)
        prompts.append({"domain": item["domain"], "prompt": prompt})
    return prompts


class WindowFit:
    """Cuts a user prompt at a token boundary so the chat vLLM renders for this specialist leaves room to answer."""

    def __init__(self, spec: Specialist, cache_dir: Path, max_tokens: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_source(cache_dir))
        self.system = [{"role": "system", "content": spec.chat.system_prompt}] if spec.chat.system_prompt else []
        self.room = spec.context_window - max_tokens
        if self.chat_tokens("") > self.room:
            raise ValueError(f"{spec.name}: a {spec.context_window}-token window leaves no room for a prompt and {max_tokens} tokens")

    def chat_tokens(self, prompt: str) -> int:
        """Tokens of the rendered chat, counted as vLLM's chat endpoint counts them."""
        text = self.tokenizer.apply_chat_template([*self.system, {"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, prompt: str) -> str:
        while (excess := self.chat_tokens(prompt) - self.room) > 0:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            prompt = self.tokenizer.decode(ids[: max(0, len(ids) - excess)])
        return prompt
