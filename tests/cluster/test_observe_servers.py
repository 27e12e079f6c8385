"""The real Prometheus and Alertmanager of servers.py on free ports, scraping a static exporter through a Ray-style
service-discovery file: the rules load and evaluate, an alert reaches Alertmanager and a webhook, and nothing outlives
`stop()`, a crashed run or a killed parent."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from cluster.observe.alerts import GROUP, alerts
from cluster.observe.servers import ServersError, alertmanager_config, binary, prometheus_config, promtool, start
from router.catalog import load_profile
from tests.cluster.observe_helpers import MetricsExporter, WebhookReceiver, free_port, write_ray_sd_file

TINY = load_profile("tiny")
FAST = {"scrape_interval_s": 1, "evaluation_interval_s": 1, "group_wait_s": 1}


def engine_in_trouble(scrape: int) -> str:
    """tiny-coder refuses requests as unavailable (a counter growing each scrape) and its KV cache is 95 % full."""
    return (
        "# TYPE ray_router_requests_total counter\n"
        f'ray_router_requests_total{{specialist="tiny-coder",outcome="unavailable",stream="false"}} {scrape}\n'
        "# TYPE ray_vllm_kv_cache_usage_perc gauge\n"
        'ray_vllm_kv_cache_usage_perc{model_name="tiny-coder"} 0.95\n'
    )


def get(url: str, path: str, **query: str) -> dict | list:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(query)}", timeout=5) as response:
        return json.loads(response.read())


def eventually(probe, timeout_s: float, what: str):
    """`probe()`'s first truthy answer, polled every 0.5 s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answer := probe():
            return answer
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # reaped by whoever inherited it, or not yet
    except psutil.NoSuchProcess:
        return True


def test_an_alert_goes_from_a_scraped_target_through_alertmanager_to_the_webhook(tmp_path: Path) -> None:
    with MetricsExporter(engine_in_trouble) as exporter, WebhookReceiver() as webhook:
        # as Ray lays it out: a link in its temp root to the session's file, which Ray replaces as nodes come and go
        (tmp_path / "session").mkdir()
        session_sd_file = write_ray_sd_file(tmp_path / "session" / "prom_metrics_service_discovery.json", [])
        sd_link = tmp_path / "prom_metrics_service_discovery.json"
        sd_link.symlink_to(session_sd_file)
        servers = start(TINY, tmp_path / "state", sd_link, prometheus_port=free_port(), alertmanager_port=free_port(),
                        webhook_url=webhook.url, **FAST)
        pids = (servers.prometheus_pid, servers.alertmanager_pid)
        try:
            servers.wait_ready(timeout_s=30)
            assert [psutil.Process(pid).name() for pid in pids] == ["prometheus", "prometheus-alertmanager"]  # not a wrapper
            write_ray_sd_file(tmp_path / "session" / "next.json", [exporter.address]).replace(session_sd_file)
            prometheus = servers.prometheus_url

            def every_target_up() -> dict | None:
                up = {r["metric"]["job"]: r["value"][1] for r in get(prometheus, "/api/v1/query", query="up")["data"]["result"]}
                return up if len(up) == 3 else None

            assert eventually(every_target_up, 20, "three targets scraped") == \
                {"ray": "1", "prometheus": "1", "alertmanager": "1"}

            def rules() -> list[dict]:
                return [rule for group in get(prometheus, "/api/v1/rules")["data"]["groups"] if group["name"] == GROUP
                        for rule in group["rules"]]

            def evaluated_rules() -> list[dict] | None:
                """The rules once each has run (until then Prometheus reports year 1 as its last evaluation)."""
                loaded = rules()
                return loaded if all(not rule["lastEvaluation"].startswith("0001") for rule in loaded) else None

            assert sorted(rule["name"] for rule in rules()) == sorted(alert.name for alert in alerts(TINY))
            evaluated = eventually(evaluated_rules, 20, "every rule evaluated")
            assert {rule["health"] for rule in evaluated} == {"ok"}, [rule.get("lastError") for rule in evaluated]

            alert = webhook.wait_for_alert("SpecialistFailing", 60, specialist="tiny-coder")
            assert alert["labels"]["severity"] == "page"
            assert alert["annotations"]["summary"].startswith("tiny-coder failed requests")
            in_alertmanager = get(servers.alertmanager_url, "/api/v2/alerts")
            assert {"SpecialistFailing"} == {a["labels"]["alertname"] for a in in_alertmanager}
            states = {a["labels"]["alertname"]: a["state"] for a in get(prometheus, "/api/v1/alerts")["data"]["alerts"]}
            assert states["EngineKVCacheFull"] == "pending"  # its 5 minutes have not passed
        finally:
            servers.stop()
    assert all(gone(pid) for pid in pids)
    assert not list((tmp_path / "state").glob("*.pid"))


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServersError, match=f"127.0.0.1:{port} for alertmanager is in use"):
            start(TINY, tmp_path, tmp_path / "sd.json", prometheus_port=free_port(), alertmanager_port=port)
    assert not list(tmp_path.glob("*.pid"))


def test_a_later_start_stops_what_a_crashed_run_left(tmp_path: Path) -> None:
    crashed = start(TINY, tmp_path, tmp_path / "sd.json", prometheus_port=free_port(), alertmanager_port=free_port())
    crashed.wait_ready(timeout_s=30)
    with start(TINY, tmp_path, tmp_path / "sd.json", prometheus_port=free_port(), alertmanager_port=free_port()) as servers:
        assert gone(crashed.prometheus_pid) and gone(crashed.alertmanager_pid)
        servers.wait_ready(timeout_s=30)
        crashed.stop()  # nothing of its own left: the later run's processes and pid files stay
        assert (tmp_path / "prometheus.pid").read_text().strip() == str(servers.prometheus_pid)
        assert not gone(servers.prometheus_pid)


def test_the_servers_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    parent = subprocess.run([sys.executable, "-c", f"""
import os, signal
from pathlib import Path
from cluster.observe.servers import start
from router.catalog import load_profile
servers = start(load_profile("tiny"), Path({str(tmp_path)!r}), Path("sd.json"), prometheus_port={free_port()},
                alertmanager_port={free_port()})
servers.wait_ready(timeout_s=30)
os.kill(os.getpid(), signal.SIGKILL)
"""], cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=60)
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    pids = [int((tmp_path / f"{name}.pid").read_text()) for name in ("prometheus", "alertmanager")]
    eventually(lambda: all(gone(pid) for pid in pids), 15, "both stopped by their parent-death signal")


@pytest.mark.parametrize("webhook_url", ["http://127.0.0.1:9/alerts", None])
def test_the_configs_pass_their_checkers(webhook_url: str | None, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text("groups: []\n")
    prometheus_yml, alertmanager_yml = tmp_path / "prometheus.yml", tmp_path / "alertmanager.yml"
    prometheus_yml.write_text(yaml.safe_dump(prometheus_config(rules, tmp_path / "sd.json", 9090, 9093, 5, 5)))
    alertmanager_yml.write_text(yaml.safe_dump(alertmanager_config(webhook_url, 10)))
    checked = promtool(["check", "config", str(prometheus_yml)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    amtool = subprocess.run([binary("amtool"), "check-config", str(alertmanager_yml)], capture_output=True, text=True)
    assert amtool.returncode == 0, amtool.stdout + amtool.stderr

