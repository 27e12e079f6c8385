"""Send one OpenAI request to a specialist's LLMServer deployment and classify what comes back.

Retries a replica failure once, turns Serve back-pressure into 503, enforces the deadline, and cancels the
upstream request when the client's deadline passes, so no engine keeps generating for nobody.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from vllm.entrypoints.serve.engine.protocol import ErrorResponse  # the engine's own class, not Ray's subclass
from vllm.exceptions import VLLMClientError

from serve.errors import APIError, bad_request, overloaded, unavailable, upstream_timeout

log = logging.getLogger("ray.serve")

# What a replica raises (wrapped by Ray, which subclasses the original type) when one request is malformed in a way
# the schema let through, or cannot be serialised to it; a dead engine or actor raises other types.
CLIENT_FAULTS = (TypeError, ValueError, KeyError, RecursionError, pickle.PicklingError, VLLMClientError)
CONTEXT_OVERFLOW = re.compile(r"maximum (context|model) length|max_model_len|context length|too long", re.I)


@dataclass
class Upstream:
    """A started call: the first chunk (or whole response) and the rest of the stream, if any."""

    first: Any
    rest: AsyncIterator[Any] | None

    @property
    def is_stream(self) -> bool:
        return self.rest is not None


def is_context_overflow(error: APIError) -> bool:
    """A 400 from the engine because the prompt does not fit: a larger-window model might still take it."""
    return error.status == 400 and bool(CONTEXT_OVERFLOW.search(error.message))


async def call_specialist(
    handle: DeploymentHandle, method: str, body: Any, *, model: str, deadline_s: float, retries: int = 1
) -> Upstream:
    """Start `method` (chat/completions) on the specialist; raise APIError for anything but a good first chunk."""
    give_up_at = time.monotonic() + deadline_s  # one deadline for all attempts, not one each
    for attempt in range(retries + 1):
        gen = handle.options(stream=True).__getattr__(method).remote(body, None)
        try:
            first = await asyncio.wait_for(gen.__anext__(), timeout=max(0.0, give_up_at - time.monotonic()))
        except asyncio.TimeoutError:
            gen.cancel()
            raise upstream_timeout(model, deadline_s) from None
        except asyncio.CancelledError:  # the caller gave up (an ensemble's deadline, a client gone): stop the engine too
            gen.cancel()
            raise
        except BackPressureError:
            raise overloaded(f"the {model!r} queue is full") from None
        except StopAsyncIteration:
            raise unavailable(f"the model {model!r} returned no output") from None
        except CLIENT_FAULTS as e:  # the request itself broke it (as RayTaskError(TypeError) etc.): a 400, no retry, and
            # not a failure of the specialist, whose other requests are fine
            raise bad_request(f"the model {model!r} could not process this request: {_summary(e)}") from None
        except Exception as e:  # a dead replica or engine (RayTaskError, ActorDiedError, EngineDeadError, …)
            log.warning("specialist %s failed (attempt %d): %s", model, attempt + 1, _summary(e))
            if attempt == retries:
                raise unavailable(f"the model {model!r} has no healthy replica") from None
            continue
        _raise_engine_error(first)
        return Upstream(first, None if _is_complete_response(first) else gen)
    raise AssertionError("unreachable")


def _summary(error: Exception) -> str:
    """Type and last line: Ray wraps the replica's whole traceback into the message."""
    return f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"


def _raise_engine_error(first: Any) -> None:
    """LLMServer reports engine-side problems (bad params, prompt too long) as an ErrorResponse chunk."""
    chunk = first[0] if isinstance(first, list) and first else first
    if isinstance(chunk, ErrorResponse):
        raise APIError(chunk.error.code, chunk.error.message, type=chunk.error.type, param=chunk.error.param)


def _is_complete_response(first: Any) -> bool:
    """Non-streaming calls yield one pydantic response object; streams yield SSE strings (batched in lists)."""
    return not isinstance(first, (list, str))
