"""Replicas per Serve deployment as the dashboard's REST API reports them: one reader for the load test's
watcher and the live comparison's wait for the cluster to settle."""

from __future__ import annotations

APPLICATIONS_PATH = "/api/serve/applications/"


def replicas_by_deployment(applications: dict) -> dict[str, dict]:
    """{deployment: {running, starting, total, target}} from the JSON body of GET APPLICATIONS_PATH.

    `total` counts replicas in any state (a STOPPING replica still holds memory and cores); `target` is what
    the autoscaler currently wants, None when Serve does not report it.
    """
    return {
        name: {
            "running": sum(r["state"] == "RUNNING" for r in deployment["replicas"]),
            "starting": sum(r["state"] == "STARTING" for r in deployment["replicas"]),
            "total": len(deployment["replicas"]),
            "target": deployment.get("target_num_replicas"),
        }
        for app in applications["applications"].values()
        for name, deployment in app["deployments"].items()
    }
