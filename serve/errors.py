"""OpenAI-style errors: every failure a client can see leaves the router as one of these JSON bodies."""

from __future__ import annotations

from starlette.responses import JSONResponse


class APIError(Exception):
    """An error with its HTTP status and OpenAI `type`/`code`; `retry_after` marks it as retryable; `headers` go out
    with it (a 429's rate-limit headers)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.retry_after, self.headers = retry_after, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        headers = {**self.headers, **(headers or {})}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> APIError:
    return APIError(400, message, param=param, code=code)


def internal_error() -> APIError:
    return APIError(500, "Internal error in the router; it has been logged.", type="server_error", code="internal_error")


def too_large(limit: int) -> APIError:
    return APIError(413, f"Request body is larger than this deployment accepts ({limit} bytes).", code="request_too_large")


def body_timeout(seconds: float, received: int) -> APIError:
    return APIError(408, f"The request body did not arrive within {seconds:g} s ({received} bytes came).", code="request_timeout")


def client_closed() -> APIError:
    """The client left before its request was read: nobody sees this answer, but the request's record does."""
    return APIError(499, "The client closed the request.", code="client_closed")


def model_not_found(model: str, available: list[str]) -> APIError:
    return APIError(
        404,
        f"The model {model!r} does not exist. Use 'auto' or one of: {', '.join(available)}.",
        code="model_not_found",
        param="model",
    )


def overloaded(detail: str, retry_after: float = 1.0) -> APIError:
    return APIError(503, f"Overloaded: {detail}. Retry later.", type="server_error", code="overloaded", retry_after=retry_after)


def unavailable(detail: str, retry_after: float = 5.0) -> APIError:
    return APIError(503, f"Unavailable: {detail}.", type="server_error", code="unavailable", retry_after=retry_after)


def upstream_timeout(model: str, seconds: float) -> APIError:
    return APIError(
        504, f"The model {model!r} did not answer within {seconds:g} s.", type="server_error", code="upstream_timeout"
    )


def unauthorized(detail: str) -> APIError:
    return APIError(401, f"{detail} Send `Authorization: Bearer sr-...` with a key from your administrator.",
                    code="invalid_api_key")


def forbidden(detail: str) -> APIError:
    return APIError(403, detail, type="permission_error", code="forbidden")


def rate_limited(detail: str, retry_after_s: int, headers: dict[str, str]) -> APIError:
    return APIError(429, f"Rate limit reached: {detail}. Retry in {retry_after_s} s.", type="rate_limit_error",
                    code="rate_limit_exceeded", retry_after=retry_after_s, headers=headers)
