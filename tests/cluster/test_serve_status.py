"""The shared reader of Serve's REST status that load tests and live comparisons wait and report on."""

from cluster.serve_status import replicas_by_deployment

# The shape of GET 127.0.0.1:8265/api/serve/applications/ (Ray 2.60), cut to the fields read, mid scale-up.
APPLICATIONS = {
    "applications": {
        "specialists": {
            "deployments": {
                "router": {"target_num_replicas": 1, "replicas": [{"state": "RUNNING"}]},
                "LLMServer:tiny-general": {
                    "target_num_replicas": 2,
                    "replicas": [{"state": "RUNNING"}, {"state": "STARTING"}],
                },
                "LLMServer:tiny-coder": {"replicas": [{"state": "RUNNING"}, {"state": "STOPPING"}]},
            }
        }
    }
}


def test_replica_states_are_counted_per_deployment():
    replicas = replicas_by_deployment(APPLICATIONS)
    assert replicas["LLMServer:tiny-general"] == {"running": 1, "starting": 1, "total": 2, "target": 2}
    assert replicas["LLMServer:tiny-coder"] == {"running": 1, "starting": 0, "total": 2, "target": None}
    assert replicas["router"]["running"] == 1
