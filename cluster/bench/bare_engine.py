"""A bare vLLM AsyncLLM (no Ray, no HTTP) with a specialist's settings: the baseline the benchmarks compare against."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any


class BareEngine:
    """One in-process engine plus the model's chat template; `generate` reports token ids and timings."""

    def __init__(self, model: str, engine_kwargs: dict[str, Any], env: dict[str, str]) -> None:
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        os.environ.update(env)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        start = time.perf_counter()
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model, **engine_kwargs))
        self.init_s = time.perf_counter() - start
        self._ids = itertools.count()

    async def generate(self, prompt: str, max_tokens: int, *, ignore_eos: bool = False) -> tuple[list[int], float, float]:
        """Chat-formatted greedy generation: (token ids, seconds to the first token, seconds in all)."""
        from vllm import SamplingParams

        messages = [{"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=ignore_eos)
        start, first, final = time.perf_counter(), None, None
        async for output in self.engine.generate(text, params, request_id=f"bare-{next(self._ids)}"):
            first = first or time.perf_counter()
            final = output
        return list(final.outputs[0].token_ids), first - start, time.perf_counter() - start

    def shutdown(self) -> None:
        self.engine.shutdown()
