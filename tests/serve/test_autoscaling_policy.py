"""The app-level autoscaling policy (serve/autoscaling.py): the Serve config carries it, it decides what Ray's default
per-deployment policy decides, and Ray's controller can load it without our package."""

import subprocess
import sys
import textwrap
import time

from ray.serve.autoscaling_policy import (
    _apply_app_level_autoscaling_config,
    _apply_autoscaling_config,
    replica_queue_length_autoscaling_policy,
)
from ray.serve._private.common import DeploymentID
from ray.serve.config import AutoscalingConfig, AutoscalingContext, AutoscalingPolicy

from serve.app import AppArgs
from serve.autoscaling import POLICY_FUNCTION, each_deployment_by_queue_length
from serve.config import serve_config

CONFIGS = {
    DeploymentID("router", "specialists"): AutoscalingConfig(
        min_replicas=1, max_replicas=2, target_ongoing_requests=8, upscale_delay_s=0, downscale_delay_s=0.25),
    DeploymentID("LLMServer:coder", "specialists"): AutoscalingConfig(
        min_replicas=1, max_replicas=3, target_ongoing_requests=4, upscale_delay_s=0.25, downscale_delay_s=0.45),
}


def context(deployment: DeploymentID, replicas: int, requests: float, state: dict, now: float) -> AutoscalingContext:
    config = CONFIGS[deployment]
    return AutoscalingContext(
        deployment_id=deployment, deployment_name=deployment.name, app_name=deployment.app_name,
        current_num_replicas=replicas, target_num_replicas=replicas, running_replicas=[], total_num_requests=requests,
        total_queued_requests=0, aggregated_metrics=None, raw_metrics=None,
        capacity_adjusted_min_replicas=config.min_replicas, capacity_adjusted_max_replicas=config.max_replicas,
        policy_state=state, last_scale_up_time=None, last_scale_down_time=None, current_time=now, config=config)


def test_the_serve_config_sets_the_policy_at_application_level():
    (app,) = serve_config(AppArgs(profile="tiny"))["applications"]
    assert app["autoscaling_policy"] == {"policy_function": POLICY_FUNCTION}


def test_each_deployment_gets_the_decisions_rays_default_policy_gives_it():
    """Over a rise and fall of load, with upscale/downscale delays (Ray times them by the clock: ticks of 0.1 s),
    replica for replica the same as the default."""
    ours, default = _apply_app_level_autoscaling_config(each_deployment_by_queue_length), {
        d: _apply_autoscaling_config(replica_queue_length_autoscaling_policy) for d in CONFIGS}
    replicas = {d: 1 for d in CONFIGS}
    our_state: dict = {d: {} for d in CONFIGS}
    default_state: dict = {d: {} for d in CONFIGS}
    load = [0, 20, 20, 20, 20, 40, 40, 40, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0]
    changes = 0
    for tick, requests in enumerate(load):
        time.sleep(0.1)
        now = time.time()
        decided, our_state = ours({d: context(d, replicas[d], requests, our_state[d], now) for d in CONFIGS})
        for d in CONFIGS:
            expected, default_state[d] = default[d](context(d, replicas[d], requests, default_state[d], now))
            assert decided[d] == expected, (tick, d)
            changes += decided[d] != replicas[d]
            replicas[d] = decided[d]
    assert changes >= 4  # the load moved both deployments up and back down


def test_rays_controller_loads_the_policy_without_our_package():
    """Ray pickles the policy by value; the controller has no `serve` package of ours to import."""
    pickled = AutoscalingPolicy(policy_function=POLICY_FUNCTION)._serialized_policy_def
    probe = textwrap.dedent("""
        import sys, cloudpickle
        sys.modules["serve"] = None  # importing our package fails from here on
        policy = cloudpickle.loads(sys.stdin.buffer.read())
        print(policy.__name__)
    """)
    out = subprocess.run([sys.executable, "-c", probe], input=pickled, capture_output=True, check=True)
    assert out.stdout.decode().strip() == "each_deployment_by_queue_length"
