"""/openapi.json with real request bodies for the routes that read their own (size cap first, then vLLM's protocol
models): the schemas come from those same models, so clients and fuzzers see what the ingress validates."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from serve.requests import REQUEST_MODELS, ROUTER_FIELD

OPENAPI_PATH = "/openapi.json"
SCHEMAS = "#/components/schemas/"


def _body_schemas() -> tuple[dict[str, dict], dict[str, dict]]:
    """Each method's body schema (`model` required, our `router` hints added) and the definitions they refer to."""
    bodies = {method: model.model_json_schema(ref_template=SCHEMAS + "{model}") for method, model in REQUEST_MODELS.items()}
    definitions = {name: schema for body in bodies.values() for name, schema in body.pop("$defs", {}).items()}
    for body in bodies.values():
        body["required"] = sorted({*body.get("required", []), "model"})
        body["properties"]["model"] = {"type": "string", "description": "`auto`, a specialist or an ensemble (GET /v1/models)"}
        body["properties"][ROUTER_FIELD] = {"type": "object", "description": "Router hints: `auto` weights, `ensemble`, `cache`"}
    return bodies, definitions


BODIES, BODY_DEFINITIONS = _body_schemas()


def request_body(method: str) -> dict[str, Any]:
    """The route's `openapi_extra`: its JSON body."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": BODIES[method]}}}}


def describe_bodies(api: FastAPI) -> None:
    """Make `api.openapi()` carry the definitions the request bodies refer to."""

    def openapi() -> dict[str, Any]:
        schema = FastAPI.openapi(api)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(BODY_DEFINITIONS)
        return schema

    api.openapi = openapi
