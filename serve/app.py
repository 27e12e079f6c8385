"""Build the Serve application for one profile: an LLMServer deployment per specialist behind the router ingress.

`serve run serve.app:build_app profile=tiny` and the config files from `python -m serve.config` both land here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from ray.serve.llm import build_llm_deployment

from router.catalog import DEFAULT_CATALOG, Observability, default_cache_dir, load_profile
from serve.cluster_metrics import DEPLOYMENT_PREFIX, deployment_name
from serve.ingress import RouterIngress
from serve.llm_configs import llm_config


REFUSAL_HEADROOM = 64  # requests a full router replica still takes in, each refused in well under a millisecond


class AppArgs(BaseModel):
    """Arguments of the app builder (the `args:` of a Serve config, or `key=value` after `serve run`)."""

    profile: str = "local"
    catalog: str | None = None
    cache_dir: str | None = None
    checkpoint: str | None = None
    observability: dict[str, Any] | None = None  # overrides of the profile's `observability` (the overhead benchmark's)
    engines_of: str | None = None  # route to this running application's engines instead of starting our own


def build_app(args: dict | AppArgs | None = None) -> Application:
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    profile = load_profile(args.profile, args.catalog or DEFAULT_CATALOG)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.observability:
        profile.observability = Observability.model_validate({**profile.observability.model_dump(), **args.observability})
    if args.engines_of:
        specialists = {spec.name: DeploymentHandle(deployment_name(spec.name), args.engines_of) for spec in profile.specialists}
    else:
        specialists = {spec.name: build_llm_deployment(llm_config(spec, profile, cache), name_prefix=DEPLOYMENT_PREFIX)
                       for spec in profile.specialists}
    ingress = RouterIngress.options(
        name="router",
        num_replicas=profile.ingress.num_replicas,
        # past our own bound Serve still lets some through, so they get our JSON 503 rather than wait in its queue
        max_ongoing_requests=profile.ingress.max_ongoing_requests + REFUSAL_HEADROOM,
        max_queued_requests=profile.ingress.max_queued_requests,
        graceful_shutdown_timeout_s=profile.ingress.drain_s,
        ray_actor_options={"num_cpus": profile.ingress.num_cpus},
    )
    return ingress.bind(profile.model_dump(mode="json"), specialists, args.checkpoint, str(cache / "observe"))
