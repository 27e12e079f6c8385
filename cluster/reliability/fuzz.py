"""Fuzzing the ingress (issue 27): hostile bodies by hand and from its OpenAPI schema must each get, in bounded time, an
OpenAI-style JSON 4xx (or a 2xx when the input happens to be valid): never a 5xx, never a hang, and /healthz stays 200.

    python -m cluster.reliability.fuzz --url http://127.0.0.1:8000 --examples 100
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx

from cluster.reliability.ledger import openai_error
from serve.requests import REQUEST_MODELS

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
PATHS = {"chat": CHAT, "completions": COMPLETIONS}
BOUND_S = 75.0  # the tiny profiles' request timeout (60 s) + 15 s: no answer by then is a hang
HI = [{"role": "user", "content": "hi"}]
BASES = {CHAT: {"model": "auto", "messages": HI, "max_tokens": 4},
         COMPLETIONS: {"model": "auto", "prompt": "hi", "max_tokens": 4}}
WRONG = ({"x": [1]}, [[None]], "\r\n", -(2**70), 1e300)  # each of the wrong type, or out of range, for almost any field
NON_FINITE = ("NaN", "Infinity", "-Infinity")  # JSON literals Python's json (and so the ingress) accepts
NUMERIC = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "max_tokens", "n", "seed", "top_k", "min_p")
HUGE = {"n": [10**9, 2**64], "max_tokens": [10**9, 2**63, 0, -1], "max_completion_tokens": [10**9], "best_of": [10**6],
        "seed": [2**80], "min_tokens": [10**9], "logprobs": [10**6], "top_logprobs": [10**6], "prompt_logprobs": [10**6],
        "truncate_prompt_tokens": [10**9], "logit_bias": [{"999999999": 100}], "stop_token_ids": [[10**9]]}
HINTS = ("x", [], {"quality": -1}, {"quality": "NaN"}, {"ensemble": "bogus"}, {"ensemble": {"proposers": 10**9}},
         {"cache": "yes"}, {"latency_budget_s": 0}, {"unknown": 1})
INJECTED = "x-injected"  # a header name a CR/LF in `model` would smuggle into the response if it were echoed raw


class Case(NamedTuple):
    name: str
    path: str
    content: bytes | Callable[[], Iterator[bytes]]  # a callable: sent chunked, without Content-Length
    headers: dict[str, str] = {}


def _json(name: str, path: str, body: Any, **headers: str) -> Case:
    return Case(name, path, json.dumps(body).encode(), headers)


def _with(name: str, path: str, **fields: Any) -> Case:
    return _json(name, path, {**BASES[path], **fields})


def _raw(name: str, path: str, text: bytes) -> Case:
    return Case(name, path, text)


def _ten_mb() -> Iterator[bytes]:
    yield b'{"model": "auto", "prompt": "'
    for _ in range(10):
        yield b"a" * (1 << 20)
    yield b'"}'


def _not_json() -> Iterator[Case]:
    """Bodies the parser must refuse: not JSON, too large (declared or chunked), too deep, not UTF-8."""
    for i, text in enumerate((b"", b"hello", b"{", b"[]", b"null", b"42", b'"auto"', b"<xml/>", b"model=auto&prompt=hi",
                              b'{"model": "auto",}', b"{'model': 'auto'}", b'\xef\xbb\xbf{"model": "auto", "prompt": "hi"}')):
        yield from (_raw(f"not JSON #{i}", path, text) for path in PATHS.values())
    yield Case("10 MB body", COMPLETIONS, b"".join(_ten_mb()))
    yield Case("10 MB body, chunked", COMPLETIONS, _ten_mb)
    yield _raw("nested lists, 100,000 deep", CHAT, b'{"model": "auto", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    yield _raw("nested objects, 50,000 deep", CHAT, b'{"model": "auto", "x": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001)
    deep: Any = "hi"
    for _ in range(40):
        deep = [deep]
    yield _with("nested 40 deep in messages", CHAT, messages=[{"role": "user", "content": deep}])
    for i, text in enumerate((b'{"model": "auto", "prompt": "\xff\xfe"}', b'{"model": "\xc0\xaf"}',
                              b'{"model": "auto", "prompt": "\xe2\x82"}', b'{"model": "auto", "prompt": "caf\xe9"}',
                              b'{"model": "auto", "prompt": "a\x00b"}')):
        yield _raw(f"invalid UTF-8 or raw control byte #{i}", COMPLETIONS, text)


def _bad_text() -> Iterator[Case]:
    """Strings no tokenizer or response header takes: lone surrogates, NULs, CR/LF."""
    for text in ("\ud800", "\udfff", "\udc00\ud800", "a\ud83dz"):
        yield _with(f"lone surrogate {text!a} in prompt", COMPLETIONS, prompt=text)
        yield _with(f"lone surrogate {text!a} in model", CHAT, model=text)
        yield _with(f"lone surrogate {text!a} in content", CHAT, messages=[{"role": "user", "content": text}])
        yield _json(f"lone surrogate {text!a} in a key", CHAT, {**BASES[CHAT], text: 1})
    for name, fields in (("NUL in prompt", {"prompt": "\x00"}), ("NULs x 1000 in prompt", {"prompt": "\x00" * 1000}),
                         ("NUL in model", {"model": "auto\x00"}), ("NUL in stop", {"stop": ["\x00"]})):
        yield _with(name, COMPLETIONS, **fields)
    yield _with("NUL in content", CHAT, messages=[{"role": "user", "content": "a\x00b"}])
    for model in ("auto\r\nX-Injected: 1", "tiny-coder\n", "\r\n", "auto\rX-Injected: 1"):
        yield from (_with(f"CR/LF in model {model!r}", path, model=model) for path in PATHS.values())


def _values() -> Iterator[Case]:
    """Numbers JSON allows but no field does, limits overrun, bad router hints, bad headers."""
    for path in PATHS.values():
        base = json.dumps(BASES[path])[:-1]
        for field in NUMERIC:
            for literal in NON_FINITE:
                yield _raw(f"{field}: {literal}", path, f'{base}, "{field}": {literal}}}'.encode())
        yield _raw("router.quality: NaN", path, f'{base}, "router": {{"quality": NaN}}}}'.encode())
        for field, values in HUGE.items():
            yield from (_with(f"{field}: {value}", path, **{field: value}) for value in values)
        yield _with("10,000 stop strings", path, stop=[f"s{i}" for i in range(10_000)])
        yield _with("a 1 MB stop string", path, stop="s" * (1 << 20))
        yield from (_with(f"router: {hints!r}", path, router=hints) for hints in HINTS)
        yield from (_with(f"X-Request-Timeout: {value}", path)._replace(headers={"x-request-timeout": value})
                    for value in ("abc", "-1", "nan", "inf", "1e309", "0"))
        yield _with("a reserved header", path)._replace(headers={"x-request-timeout-seconds": "1"})
        yield _with("text/plain content type", path)._replace(headers={"content-type": "text/plain"})


def _messages() -> Iterator[Case]:
    """Messages, content parts, prompts and structured-output options of the wrong shape."""
    parts = ({"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/x.png"}}, {"type": "input_audio"}, {"type": "bogus"},
             {"type": "text"}, {"type": "text", "text": 5}, "hi", 5, None, [])
    for part in parts:
        yield _with(f"content part {part!r}", CHAT, messages=[{"role": "user", "content": [part]}])
    for content in (5, {}, [[]], None, [], ""):
        yield _with(f"content {content!r}", CHAT, messages=[{"role": "user", "content": content}])
    for messages in ([], [{}], [{"role": "user"}], [{"content": "hi"}], [{"role": "wizard", "content": "hi"}],
                     [{"role": "tool", "content": "x"}], "hi", {}, None, HI * 257, [{"role": "system", "content": "hi"}],
                     [{"role": "assistant", "content": "hi"}]):
        yield _with(f"messages {str(messages)[:60]}", CHAT, messages=messages)
    for prompt in ([], [[]], [10**9], [-1], [[1, 2], [3]], "", None, ["hi"] * 1000):
        yield _with(f"prompt {str(prompt)[:60]}", COMPLETIONS, prompt=prompt)
    for name, fields in (("tool_choice without tools", {"tool_choice": "required"}), ("tools garbage", {"tools": [{"x": 1}]}),
                         ("json_schema without a schema", {"response_format": {"type": "json_schema"}}),
                         ("json_schema of a bogus type", {"response_format": {
                             "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}}),
                         ("an invalid regex", {"structured_outputs": {"regex": "("}}),
                         ("a chat template", {"chat_template": "{% for x in range(10**9) %}{% endfor %}"}),
                         ("stream_options without stream", {"stream_options": {"include_usage": True}})):
        yield _with(name, CHAT, **fields)


def _wrong_types() -> Iterator[Case]:
    """Every field of both protocol models in turn, set to a value of the wrong type or range."""
    for method, model in REQUEST_MODELS.items():
        for field in model.model_fields:
            yield from (_with(f"{field}: {value!r}", PATHS[method], **{field: value}) for value in WRONG)


def hand_list() -> list[Case]:
    return [*_not_json(), *_bad_text(), *_values(), *_messages(), *_wrong_types()]


def problem(status: int, headers: Any, text: str) -> str | None:
    """Why an answer is not one a client can rely on, or None: a 2xx, or a 4xx carrying an OpenAI-style JSON error."""
    if INJECTED in headers:
        return "a response header injected through the request"
    if 200 <= status < 300:
        return None
    if not 400 <= status < 500:
        return f"status {status}"
    return None if openai_error(text) else "a 4xx without an OpenAI-style JSON error"


def _failure(case: str, status: int | None, body: str, why: str) -> dict[str, Any]:
    return {"case": case, "status": status, "why": why, "body": body[:200]}


def _send(client: httpx.Client, case: Case) -> dict[str, Any] | None:
    content = case.content() if callable(case.content) else case.content
    try:
        response = client.post(case.path, content=content, headers={"content-type": "application/json", **case.headers})
    except httpx.HTTPError as e:
        return _failure(case.name, None, "", f"no answer: {type(e).__name__}: {e}")
    why = problem(response.status_code, response.headers, response.text)
    return _failure(case.name, response.status_code, response.text, why) if why else None


def slow_client(base_url: str, auth: dict[str, str], bound_s: float = BOUND_S) -> dict[str, Any] | None:
    """A client sending its body a byte a second: it must get an answer (a JSON 4xx) within the bound, not a hang."""
    url = urlsplit(base_url)
    body = json.dumps(BASES[CHAT]).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": url.netloc, "Content-Type": "application/json",
                                                 "Content-Length": len(body), "Connection": "close", **auth}.items())
    start, answer = time.monotonic(), b""
    with socket.create_connection((url.hostname, url.port or 80), timeout=bound_s) as sock:
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\n{head}\r\n".encode())
        sent = 0
        while time.monotonic() - start < bound_s:
            if select.select([sock], [], [], 1.0)[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            elif sent < len(body):
                sock.send(body[sent:sent + 1])
                sent += 1
    name = f"slow client, a byte a second ({sent} of {len(body)} sent, {time.monotonic() - start:.0f} s)"
    head_text, _, text = answer.decode(errors="replace").partition("\r\n\r\n")
    if not head_text:
        return _failure(name, None, "", "no answer within the bound" if time.monotonic() - start >= bound_s
                        else "connection closed without an answer")
    status = int(head_text.split()[1])
    headers = {line.partition(":")[0].strip().lower() for line in head_text.splitlines()[1:]}
    why = problem(status, headers, text)
    return _failure(name, status, text, why) if why else None


def _auth(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def _report(tried: int, failures: list[dict[str, Any]], base_url: str, auth: dict[str, str], start: float) -> dict[str, Any]:
    healthz = httpx.get(f"{base_url}/healthz", headers=auth, timeout=30).status_code
    return {"bad_inputs_tried": tried, "server_errors": sum(1 for f in failures if (f["status"] or 0) >= 500),
            "failures": failures, "healthz_after": healthz, "seconds": round(time.monotonic() - start, 1)}


def hand_cases(base_url: str, api_key: str | None = None) -> dict[str, Any]:
    """Every hand-made hostile input, one at a time, while a slow client trickles its body in beside them."""
    start, auth, cases = time.monotonic(), _auth(api_key), hand_list()
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=base_url, headers=auth, timeout=BOUND_S) as client:
        slow = pool.submit(slow_client, base_url, auth)
        failures = [f for f in map(lambda c: _send(client, c), cases) if f]
        failures += [f for f in [slow.result()] if f]
    return _report(len(cases) + 1, failures, base_url, auth, start)


def _cheap(case: Any) -> None:
    """A schema-valid body is served for real: routed by `auto` (a random model name would only get 404s), and short
    unless it sets a length itself (one the window cannot hold is a 400)."""
    if isinstance(case.body, dict):
        case.body["model"] = "auto"
        if "max_completion_tokens" not in case.body:
            case.body.setdefault("max_tokens", 4)


def schemathesis_run(base_url: str, max_examples: int, api_key: str | None = None) -> dict[str, Any]:
    """Schemathesis' generated bodies (schema-valid and not) for both POST routes, `max_examples` each way: every
    answer must pass its not_a_server_error check and be a 2xx or a JSON 4xx."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error

    start, auth = time.monotonic(), _auth(api_key)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=auth, timeout=30).include(method="POST")
    tried, failures = 0, []

    def run(case: Any, mode: schemathesis.GenerationMode) -> None:
        nonlocal tried
        if mode == schemathesis.GenerationMode.POSITIVE:
            _cheap(case)
        tried += 1
        name = f"{mode.value} {case.operation.label}: {json.dumps(case.body, default=repr)[:300]}"
        try:
            response = case.call(base_url=base_url, headers=auth, timeout=BOUND_S)
        except Exception as e:  # requests' errors: the server hung up or did not answer in time
            failures.append(_failure(name, None, "", f"no answer: {type(e).__name__}: {e}"))
            return
        try:
            case.validate_response(response, checks=[not_a_server_error])
            why = problem(response.status_code, response.headers, response.text)
        except schemathesis.errors.FailureGroup as group:
            why = "; ".join(f"{type(e).__name__}: {e.title}" for e in group.exceptions)
        if why:
            failures.append(_failure(name, response.status_code, response.text, why))

    for operation in (result.ok() for result in schema.get_all_operations()):
        for mode in (schemathesis.GenerationMode.NEGATIVE, schemathesis.GenerationMode.POSITIVE):
            # the test runs at once, so the lambda's `mode` is this loop's
            test = given(operation.as_strategy(generation_mode=mode))(lambda case: run(case, mode))
            settings(max_examples=max_examples, phases=[Phase.generate], deadline=None, database=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))(test)()
    return _report(tried, failures, base_url, auth, start)


def run_all(base_url: str, max_examples: int, api_key: str | None = None) -> dict[str, Any]:
    """Both parts, summed as the reliability report counts them."""
    parts = {"hand": hand_cases(base_url, api_key), "schemathesis": schemathesis_run(base_url, max_examples, api_key)}
    return {"bad_inputs_tried": sum(p["bad_inputs_tried"] for p in parts.values()),
            "server_errors": sum(p["server_errors"] for p in parts.values()),
            "failures": [f for p in parts.values() for f in p["failures"]],
            "healthz_after": parts["schemathesis"]["healthz_after"], "parts": parts}


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.reliability.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--examples", type=int, default=100, help="schemathesis examples per route and mode")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(None if argv is None else list(argv))
    print(json.dumps(run_all(args.url, args.examples, args.api_key), indent=1))


if __name__ == "__main__":
    main()
