"""Catalog specialist → `ray.serve.llm.LLMConfig`: the only place that knows both schemas."""

from __future__ import annotations

import dataclasses
import difflib
from functools import cache
from pathlib import Path
from typing import Any

from ray.serve.llm import LLMConfig

from router.catalog import CatalogError, Profile, Specialist
from serve.engine_start import SERVING_PRIORITY_ENV, PreparedWeightsCallback, YieldingLLMServer


@cache
def engine_arg_names() -> frozenset[str]:
    """Every keyword vLLM's async engine accepts; a catalog key outside this set is a typo."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return frozenset(f.name for f in dataclasses.fields(AsyncEngineArgs))


def engine_kwargs(spec: Specialist) -> dict[str, Any]:
    """The specialist's vLLM kwargs, checked against `EngineArgs`, with the window as `max_model_len`."""
    kwargs = spec.engine.kwargs()
    unknown = sorted(set(kwargs) - engine_arg_names())
    if unknown:
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, engine_arg_names(), 1)) else repr(k) for k in unknown]
        raise CatalogError(f"specialist {spec.name}: engine key(s) not accepted by vLLM EngineArgs: {', '.join(hints)}")
    if "max_model_len" in kwargs:
        raise CatalogError(f"specialist {spec.name}: set `context_window`, not engine.max_model_len")
    return {**kwargs, "max_model_len": spec.context_window}


PREFIX_AFFINITY_ROUTER = "ray.serve.llm.request_router:PrefixCacheAffinityRouter"


def deployment_config(spec: Specialist, profile: Profile) -> dict[str, Any]:
    """Ray Serve options of the specialist's LLMServer deployment."""
    autoscaling = spec.deployment.autoscaling.model_dump(exclude_none=True)  # field names are Ray Serve's
    options: dict[str, Any] = {
        "name": spec.name,
        "autoscaling_config": autoscaling,
        "max_ongoing_requests": spec.deployment.max_ongoing_requests,
        "max_queued_requests": spec.deployment.max_queued_requests,
        "graceful_shutdown_timeout_s": profile.ingress.drain_s,
    }
    router = spec.deployment.request_router
    if router.kind == "prefix_affinity":
        kwargs = {"imbalanced_threshold": router.imbalanced_threshold} if router.imbalanced_threshold else {}
        options["request_router_config"] = {"request_router_class": PREFIX_AFFINITY_ROUTER, "request_router_kwargs": kwargs}
    if profile.accelerator == "cpu":
        # The engine's placement bundle already holds one logical CPU; the replica actor must not ask for more.
        options["ray_actor_options"] = {"num_cpus": 0}
    return options


def engine_env(profile: Profile) -> dict[str, str]:
    """Env vars of a replica and its engine processes: the profile's, plus the CPU priority a serving engine drops to.

    vLLM's own logging setup is off: its `dictConfig` closes every handler in the process, Ray Serve's buffered log
    handler included, whose closed target then breaks the replica's `is_allocated()`, so a restarted Serve controller
    replaced every engine instead of recovering it (docs/reliability.md)."""
    env = {"VLLM_CONFIGURE_LOGGING": "0", **profile.engine_env}
    if profile.serving_engine_cpu_priority != "normal":
        env[SERVING_PRIORITY_ENV] = profile.serving_engine_cpu_priority
    return env


def llm_config(spec: Specialist, profile: Profile, cache_dir: Path) -> LLMConfig:
    source = spec.model_source(cache_dir)
    if spec.is_prepared_locally and not (Path(source) / "config.json").exists():
        raise CatalogError(f"{spec.name}: weights not prepared in {source}; run `python -m cluster.prepare --profile <profile>`")
    accelerator: dict[str, Any] = (
        {"accelerator_config": {"kind": "cpu"}} if profile.accelerator == "cpu" else {"accelerator_type": profile.accelerator}
    )
    return LLMConfig(
        model_loading_config={"model_id": spec.name, "model_source": source},
        engine_kwargs=engine_kwargs(spec),
        deployment_config=deployment_config(spec, profile),
        runtime_env={"env_vars": env} if (env := engine_env(profile)) else None,
        server_cls=YieldingLLMServer,
        log_engine_metrics=True,
        **({"callback_config": {"callback_class": PreparedWeightsCallback}} if spec.is_prepared_locally else {}),
        **accelerator,
    )
