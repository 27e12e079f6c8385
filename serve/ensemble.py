"""Ensembles on the wire: turning router/ensemble's calls into OpenAI chat bodies and back, and writing the answers
an ensemble already holds (a vote, a judge's pick, an early stop, a cached answer) as OpenAI responses."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from router.ensemble.calls import Call, Reply

USAGE_KEYS = ("prompt_tokens", "completion_tokens")


def call_body(call: Call) -> dict[str, Any]:
    """A non-final call as a chat body: logprobs when the mode reads them."""
    body: dict[str, Any] = {"model": call.model, "messages": call.messages, "max_tokens": call.max_tokens,
                            "temperature": call.temperature}
    if call.seed is not None:
        body["seed"] = call.seed
    if call.logprobs or call.top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = call.top_logprobs
    return body


def final_body(client: dict[str, Any], call: Call) -> dict[str, Any]:
    """The final call as the client asked for it (stream, stop, top_p, ...) with the ensemble's messages and limits."""
    body = {k: v for k, v in client.items() if k not in ("router", "max_completion_tokens")}
    return {**body, "model": call.model, "messages": call.messages, "max_tokens": call.max_tokens,
            "temperature": call.temperature}


def reply_of(model: str, response: Any, seconds: float) -> Reply:
    """A chat response (vLLM's pydantic object) as the ensemble reads it."""
    choice = response.choices[0]
    tokens = choice.logprobs.content if choice.logprobs is not None and choice.logprobs.content else []
    mean = sum(t.logprob for t in tokens) / len(tokens) if tokens else None
    first = {alt.token: alt.logprob for alt in tokens[0].top_logprobs} if tokens and tokens[0].top_logprobs else None
    usage = response.usage
    return Reply(model, choice.message.content or "", usage.prompt_tokens, usage.completion_tokens or 0, seconds,
                 choice.finish_reason, mean, first)


def usage_of(counts: dict[str, int]) -> dict[str, int]:
    prompt, completion = counts.get("prompt_tokens", 0), counts.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def add_usage(response: dict[str, Any], extra: dict[str, int]) -> dict[str, Any]:
    """`usage` of a response plus what the earlier calls used: the client pays for every call."""
    usage = response.get("usage")
    if usage:
        response["usage"] = usage_of({k: usage.get(k, 0) + extra.get(k, 0) for k in USAGE_KEYS})
    return response


def add_usage_to_sse(packet: str, extra: dict[str, int]) -> str:
    """The same for a stream: rewrite the chunk that carries `usage` (with stream_options.include_usage)."""
    if '"usage"' not in packet or not any(extra.values()):
        return packet
    lines = []
    for line in packet.split("\n"):
        if line.startswith("data: {") and '"usage"' in line:
            line = "data: " + json.dumps(add_usage(json.loads(line[len("data: "):]), extra), separators=(",", ":"))
        lines.append(line)
    return "\n".join(lines)


def completion(reply: Reply, usage: dict[str, int]) -> dict[str, Any]:
    """An answer the ensemble already holds, as a chat.completion."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": reply.model, "usage": usage_of(usage),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": reply.finish_reason or "stop"}]}


def completion_events(reply: Reply, usage: dict[str, int], include_usage: bool) -> Iterator[str]:
    """The same answer as a chat.completion.chunk stream: role, content, finish reason, usage if asked, [DONE]."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": reply.model}
    deltas = [({"role": "assistant", "content": ""}, None), ({"content": reply.text}, None), ({}, reply.finish_reason or "stop")]
    for delta, finish in deltas:
        yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}]})}\n\n"
    if include_usage:
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage_of(usage)})}\n\n"
    yield "data: [DONE]\n\n"
