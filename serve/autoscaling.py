"""The application's autoscaling policy: each deployment scaled by Ray's own queue-length rule, set at app level.

Why at app level: Ray 2.60 drops every deployment's autoscaling state when `serve deploy` rebuilds an application
that has no app-level policy, and registers again only the deployments whose options changed, so after such a
redeploy nothing autoscales (docs/reliability.md#platform-limits). An application with a policy keeps that state
across the rebuild. The decisions are the default's: Ray's wrapper applies each deployment's own `autoscaling_config`
(factors, delays, bounds). Ray pickles this module by value into its controller, so it imports nothing of ours."""

from __future__ import annotations

from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy

POLICY_FUNCTION = "serve.autoscaling:each_deployment_by_queue_length"


def each_deployment_by_queue_length(contexts: dict) -> tuple[dict, None]:
    """Replicas per deployment as Ray's default policy decides them for that deployment alone."""
    return {deployment: replica_queue_length_autoscaling_policy(ctx)[0] for deployment, ctx in contexts.items()}, None
