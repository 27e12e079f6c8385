"""Parse and shape OpenAI request bodies before dispatch: validation, routing hints, per-specialist system prompt."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from ray.exceptions import TaskCancelledError
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest
from vllm.exceptions import VLLMClientError
from starlette.requests import ClientDisconnect, Request

from router.catalog import RequestLimits, Specialist
from serve.errors import bad_request, body_timeout, client_closed, too_large

REQUEST_MODELS = {"chat": ChatCompletionRequest, "completions": CompletionRequest}
ROUTER_FIELD = "router"
ENSEMBLE_FIELD, CACHE_FIELD = "ensemble", "cache"  # inside `router`, beside the `auto` weights
MAX_DEPTH = 32  # JSON nesting; OpenAI bodies need about 6 (tools' JSON schemas a few more)
# Headers Ray Serve's proxy acts on (its own timeout, carrying on after a disconnect, model multiplexing): a client
# must not steer the platform with them. Compared with `_` as `-`, as Ray does.
PLATFORM_HEADERS = ("x-request-timeout-seconds", "x-request-disconnect-disabled", "serve-multiplexed-model-id")


@dataclass(frozen=True)
class RouterHints:
    """The request's `router` field, split: the `auto` weights (checked by router.policy), the ensemble it asks
    for (checked by router.ensemble.spec), and whether it may be answered from the response cache."""

    weights: Any
    ensemble: Any
    cache: bool


def router_hints(body: dict[str, Any]) -> RouterHints:
    raw = body.get(ROUTER_FIELD)
    if not isinstance(raw, dict):
        return RouterHints(raw, None, True)
    cache = raw.get(CACHE_FIELD, True)
    if not isinstance(cache, bool):
        raise bad_request(f"router.cache must be true or false, got {cache!r}", param=f"{ROUTER_FIELD}.{CACHE_FIELD}")
    weights = {k: v for k, v in raw.items() if k not in (ENSEMBLE_FIELD, CACHE_FIELD)}
    return RouterHints(weights, raw.get(ENSEMBLE_FIELD), cache)


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> dict[str, Any]:
    """The JSON object of the request, or a 4xx that says what is wrong with it; a body over `max_bytes` is refused
    as soon as its size shows, never read whole, and one still arriving after `timeout_s` (a slow client holding a
    slot) gets a 408."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    raw = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > max_bytes:
                    raise too_large(max_bytes)
    except TimeoutError:
        raise body_timeout(timeout_s, len(raw)) from None
    except (ClientDisconnect, TaskCancelledError):  # nobody will read the answer; recorded as the client's doing
        raise client_closed() from None
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request(f"Request body is not valid JSON: {e}") from None
    except RecursionError:
        raise bad_request(f"Request body is nested more than {MAX_DEPTH} levels deep.") from None
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object.")
    _check_structure(body)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_request("`model` is required: 'auto' or a specialist name (see GET /v1/models).", param="model")
    return body


def _check_structure(body: dict[str, Any]) -> None:
    """What the schema cannot see: nesting deep enough to break serialisation on the way to the engine, and lone
    UTF-16 surrogates (valid JSON escapes, but no UTF-8 text: the tokenizers refuse them)."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise bad_request(f"Request body is nested more than {MAX_DEPTH} levels deep.")
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            for text in (key, item):
                if isinstance(text, str) and not _is_utf8(text):
                    raise bad_request("Request body contains a lone UTF-16 surrogate (U+D800 to U+DFFF), which is not text.")
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def validate(method: str, body: dict[str, Any]) -> Any:
    """Check the body against vLLM's own OpenAI schema (our `router` hints removed), so bad input is a 400 here."""
    payload = {k: v for k, v in body.items() if k != ROUTER_FIELD}
    try:
        request = REQUEST_MODELS[method].model_validate(payload)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
        raise bad_request(f"Invalid request: {where}: {first['msg']}{more}", param=where) from None
    except VLLMClientError as e:  # vLLM's cross-field checks (tool_choice without tools, stream_options without stream)
        raise bad_request(f"Invalid request: {e}", param=getattr(e, "parameter", None)) from None
    except (TypeError, AttributeError) as e:  # vLLM's pre-validation code meets a field of the wrong type first
        raise bad_request(f"Invalid request: a field has the wrong type ({e}).") from None
    if method == "chat":
        _check_content_parts(payload["messages"])
    return request


def check_headers(headers: Any) -> None:
    """Refuse the headers only the serving platform may set (a deadline is `X-Request-Timeout`)."""
    for key in headers.keys():
        if key.lower().replace("_", "-") in PLATFORM_HEADERS:
            raise bad_request(f"The header {key!r} is reserved for the serving platform; send a deadline as "
                              "X-Request-Timeout (seconds).", code="reserved_header")


def check_limits(method: str, request: Any, limits: RequestLimits) -> None:
    """The profile's caps on what one request may ask for, each a 400 that names the field and its limit."""
    stop = request.stop if isinstance(request.stop, list) else [request.stop] if request.stop else []
    logprobs = request.top_logprobs if method == "chat" else request.logprobs
    for field, value, limit in (("messages", len(getattr(request, "messages", None) or []), limits.max_messages),
                                ("n", request.n or 1, limits.max_n), ("stop", len(stop), limits.max_stop),
                                ("top_logprobs" if method == "chat" else "logprobs", logprobs or 0, limits.max_logprobs)):
        if value > limit:
            raise bad_request(f"{field}: {value} is over this deployment's limit of {limit}.", param=field,
                              code="limit_exceeded")
    if (longest := max((len(s) for s in stop), default=0)) > limits.max_stop_chars:
        raise bad_request(f"stop: a stop string of {longest} characters is over the limit of {limits.max_stop_chars}.",
                          param="stop", code="limit_exceeded")


def _check_content_parts(messages: list[dict[str, Any]]) -> None:
    """The specialists read text: a content part of any other type is the client's error, not an engine failure."""
    for i, message in enumerate(messages):
        content = message.get("content")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"messages[{i}].content[{j}]: content parts of type {kind!r} are not supported; "
                                  "the specialists read text parts only", param=f"messages.{i}.content.{j}.type")
            if not isinstance(part.get("text"), str):
                raise bad_request(f"messages[{i}].content[{j}].text must be a string", param=f"messages.{i}.content.{j}.text")


def max_answer_tokens(request: Any) -> int | None:
    """The most tokens the client lets the answer have (None: up to the context window)."""
    return getattr(request, "max_completion_tokens", None) or getattr(request, "max_tokens", None)


def for_specialist(method: str, body: dict[str, Any], spec: Specialist) -> Any:
    """The request as this specialist receives it: its model id, and its system prompt when the client sent none."""
    payload = {k: v for k, v in body.items() if k != ROUTER_FIELD}
    payload["model"] = spec.name
    system = spec.chat.system_prompt
    if method == "chat" and system and not any(m.get("role") == "system" for m in payload["messages"]):
        payload["messages"] = [{"role": "system", "content": system}, *payload["messages"]]
    return REQUEST_MODELS[method].model_validate(payload)


def routing_text(method: str, body: dict[str, Any]) -> str:
    """What the scorer reads: the last user message of a chat, or the (first) completion prompt."""
    if method == "completions":
        prompt = body.get("prompt", "")
        return prompt if isinstance(prompt, str) else str(prompt[0]) if prompt else ""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""
