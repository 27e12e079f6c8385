"""The profile's caps on one request and the headers only the platform may set (serve/requests.py)."""

import asyncio

import pytest
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request

from router.catalog import RequestLimits
from serve.errors import APIError
from serve.requests import check_headers, check_limits, read_body, validate

LIMITS = RequestLimits(max_messages=3, max_n=2, max_stop=2, max_stop_chars=5, max_logprobs=4)
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def refused(method: str, body: dict) -> APIError:
    with pytest.raises(APIError) as caught:
        check_limits(method, validate(method, body), LIMITS)
    assert caught.value.status == 400 and caught.value.code == "limit_exceeded"
    return caught.value


@pytest.mark.parametrize(("body", "param"), [
    ({**CHAT, "messages": CHAT["messages"] * 4}, "messages"),
    ({**CHAT, "n": 3}, "n"),
    ({**CHAT, "stop": ["a", "b", "c"]}, "stop"),
    ({**CHAT, "stop": "toolong"}, "stop"),
    ({**CHAT, "logprobs": True, "top_logprobs": 5}, "top_logprobs"),
])
def test_each_chat_limit_is_a_400_naming_the_field_and_the_limit(body, param):
    error = refused("chat", body)
    assert error.param == param and "limit" in error.message


def test_completions_count_logprobs_and_within_limits_pass():
    assert refused("completions", {"model": "auto", "prompt": "x", "logprobs": 5}).param == "logprobs"
    check_limits("chat", validate("chat", {**CHAT, "n": 2, "stop": ["ab", "cd"], "logprobs": True, "top_logprobs": 4}), LIMITS)
    check_limits("completions", validate("completions", {"model": "auto", "prompt": "x", "stop": "end"}), LIMITS)


@pytest.mark.parametrize("name", ["X-Request-Timeout-Seconds", "x-request-disconnect-disabled", "serve_multiplexed_model_id",
                                  "Serve-Multiplexed-Model-Id"])
def test_headers_only_the_platform_may_set_are_refused(name):
    with pytest.raises(APIError) as caught:
        check_headers(Headers({name: "1"}))
    assert caught.value.status == 400 and caught.value.code == "reserved_header"


def test_ordinary_headers_pass():
    check_headers(Headers({"x-request-timeout": "5", "x-request-id": "a", "authorization": "Bearer x"}))


@pytest.mark.parametrize("body", [
    {"model": "auto", "messages": None},  # vLLM's own pre-checks raise TypeError / AttributeError on these
    {"model": "auto", "messages": 1e300},
    {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "structured_outputs": [[None]]},
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
])
def test_fields_of_the_wrong_type_are_a_400_not_a_crash(body):
    with pytest.raises(APIError) as raised:
        validate("chat", body)
    assert raised.value.status == 400


def test_a_body_that_trickles_in_gets_a_408_and_one_whose_client_left_a_499():
    async def trickle():
        yield {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.sleep(10)

    async def gone():
        raise ClientDisconnect()
        yield  # noqa: unreachable -- makes this an async generator

    def request(receive) -> Request:
        messages = receive()
        return Request({"type": "http", "method": "POST", "headers": []}, lambda: messages.__anext__())

    for receive, status in ((trickle, 408), (gone, 499)):
        with pytest.raises(APIError) as raised:
            asyncio.run(read_body(request(receive), 1000, timeout_s=0.2))
        assert raised.value.status == status
