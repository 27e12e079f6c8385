"""The key check as the ingress wires it (serve/auth.py `Gate`), on a small FastAPI app with the same routes and calls:
401 `invalid_api_key` without a good key, 403 `forbidden` for a tenant on an admin route, /healthz open, auth off
lets everything through, and a revocation takes effect without a restart."""

import json
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.responses import JSONResponse, Response, StreamingResponse

from router.catalog import load_profile
from serve.auth import Gate, KeyStore, create_key, revoke_key
from serve.errors import APIError
from serve.observe import Record, observe_stream

USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


def app_for(gate: Gate) -> FastAPI:
    """The ingress's wiring of the gate, route for route (serve/ingress.py)."""
    app = FastAPI()
    app.exception_handler(APIError)(lambda _, error: error.response())

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ready"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        gate.identify(request.headers.get("authorization"))
        return {"object": "list", "data": []}

    @app.get("/v1/router/decisions/{request_id}")
    async def decision(request_id: str, request: Request) -> dict:
        gate.identify(request.headers.get("authorization"), admin=True)
        return {"request_id": request_id}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        admission = None
        try:
            admission = await gate.admit(request.headers.get("authorization"))
            body = await request.json()
            response = StreamingResponse(_events(), media_type="text/event-stream") if body.get("stream") \
                else JSONResponse({"choices": [], "usage": USAGE})
        except APIError as e:
            response = e.response()
        response.headers.update(admission.headers if admission else {})
        record = Record("id", "chat")
        if isinstance(response, StreamingResponse):
            response.body_iterator = observe_stream(response.body_iterator, record, lambda r: gate.settle(admission, r.usage))
        else:
            gate.settle(admission, USAGE)
        return response

    return app


async def _events():
    yield 'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    yield f'data: {json.dumps({"choices": [], "usage": USAGE}, separators=(",", ":"))}\n\n'
    yield "data: [DONE]\n\n"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


@pytest.fixture
def http(store: Path) -> TestClient:
    with TestClient(app_for(Gate(KeyStore(store)))) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic c3I6eA=="},
                                     bearer("sr-short"), bearer("sk-" + "a" * 43), bearer("sr-" + "a" * 43)],
                         ids=["none", "empty", "basic", "malformed", "other-prefix", "unknown"])
@pytest.mark.parametrize("route", ["/v1/models", "/v1/router/decisions/x", "/v1/chat/completions"])
def test_without_a_good_key_every_route_is_401(http: TestClient, store: Path, headers: dict, route: str):
    create_key(store, "billing")
    method = "POST" if route.endswith("completions") else "GET"
    assert_error(http.request(method, route, headers=headers, json={"model": "auto"}), 401, "invalid_api_key")


def test_a_tenant_key_serves_but_is_403_on_admin_routes(http: TestClient, store: Path):
    raw, _ = create_key(store, "billing")
    assert http.get("/v1/models", headers=bearer(raw)).status_code == 200
    assert http.post("/v1/chat/completions", headers=bearer(raw), json={"model": "auto"}).status_code == 200
    assert_error(http.get("/v1/router/decisions/abc", headers=bearer(raw)), 403, "forbidden")


def test_an_admin_key_reads_the_decision_log(http: TestClient, store: Path):
    raw, _ = create_key(store, "ops", "admin")
    assert http.get("/v1/router/decisions/abc", headers=bearer(raw)).json() == {"request_id": "abc"}


def test_healthz_stays_open(http: TestClient, store: Path):
    create_key(store, "billing")
    assert http.get("/healthz").status_code == 200


def test_a_revoked_key_is_refused_without_a_restart(http: TestClient, store: Path):
    raw, key = create_key(store, "billing")
    assert http.get("/v1/models", headers=bearer(raw)).status_code == 200
    revoke_key(store, key.id)
    response = http.get("/v1/models", headers=bearer(raw))
    assert_error(response, 401, "invalid_api_key")
    assert "revoked" in response.json()["error"]["message"]


def test_a_key_created_after_start_works_at_once(http: TestClient, store: Path):
    assert_error(http.get("/v1/models", headers=bearer("sr-" + "a" * 43)), 401, "invalid_api_key")  # no store yet
    raw, _ = create_key(store, "late")
    assert http.get("/v1/models", headers=bearer(raw)).status_code == 200


def test_auth_off_by_default_lets_everything_through():
    gate = Gate.from_profile(load_profile("tiny"))
    with TestClient(app_for(gate)) as client:
        assert client.get("/v1/router/decisions/abc").status_code == 200
        assert client.post("/v1/chat/completions", json={"model": "auto"}).status_code == 200


def test_auth_on_in_the_profile_reads_the_configured_store(store: Path):
    profile = load_profile("tiny").model_copy(deep=True)
    profile.security.auth, profile.security.key_store = True, str(store)
    raw, _ = create_key(store, "billing")
    with TestClient(app_for(Gate.from_profile(profile))) as client:
        assert client.get("/v1/models", headers=bearer(raw)).status_code == 200
        assert_error(client.get("/v1/models"), 401, "invalid_api_key")


def test_quotas_without_keys_are_refused_by_the_schema():
    raw = load_profile("tiny").model_dump()
    raw["security"] = {"redis_url": "redis://127.0.0.1:6380/0"}
    with pytest.raises(ValueError, match="needs security.auth"):
        type(load_profile("tiny")).model_validate(raw)
