"""Parse and shape OpenAI request bodies before dispatch: validation, routing hints, per-specialist system prompt."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest
from starlette.requests import Request

from router.catalog import Specialist
from serve.errors import bad_request

REQUEST_MODELS = {"chat": ChatCompletionRequest, "completions": CompletionRequest}
ROUTER_FIELD = "router"


async def read_body(request: Request) -> dict[str, Any]:
    """The JSON object of the request, or a 400 that says what is wrong with it."""
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request(f"Request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_request("`model` is required: 'auto' or a specialist name (see GET /v1/models).", param="model")
    return body


def validate(method: str, body: dict[str, Any]) -> Any:
    """Check the body against vLLM's own OpenAI schema (our `router` hints removed), so bad input is a 400 here."""
    payload = {k: v for k, v in body.items() if k != ROUTER_FIELD}
    try:
        return REQUEST_MODELS[method].model_validate(payload)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
        raise bad_request(f"Invalid request: {where}: {first['msg']}{more}", param=where) from None


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
