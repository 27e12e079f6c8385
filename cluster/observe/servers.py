"""A real Prometheus and Alertmanager beside the local Ray cluster, loaded with the profile's alert rules (rules.py).

Both listen on 127.0.0.1 and are our children, each started in its own session (its process group is its pid), so a
Ctrl-C at the terminal reaches only us and we stop them in order. How they are found and stopped (cluster/daemon.py):
- `Servers.stop()` signals the pids it started: SIGTERM, then SIGKILL after a grace period;
- every pid is also written to <state_dir>/<name>.pid, and a later `start` on that state dir first stops what a crashed
  run left there (only a process still running that binary with that state dir as its cwd, so a reused pid is spared);
- on Linux they are started through `setpriv --pdeathsig TERM` (util-linux), so the kernel stops them when the thread
  that started them dies, even by SIGKILL.

`python -m cluster.observe.servers --profile local` runs them until Ctrl-C (Debian: apt-get install prometheus
prometheus-alertmanager).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml

from cluster import daemon
from cluster.daemon import HOST, DaemonError
from cluster.foreground import hold
from cluster.observe.rules import write_rules
from router.catalog import Profile, default_cache_dir, load_profile

RAY_SD_FILE = Path("/tmp/ray/prom_metrics_service_discovery.json")  # Ray links its session's file here
INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"
STOP_GRACE_S = 10.0
GROUP_BY = ["alertname", "specialist"]


class ServersError(DaemonError):
    """Prometheus or Alertmanager could not be started or did not come up; the message says why and where the log is."""


def binary(*names: str) -> str:
    """The first of `names` on PATH (Debian names Alertmanager `prometheus-alertmanager`, upstream `alertmanager`)."""
    for name in names:
        if path := shutil.which(name):
            return path
    raise ServersError(f"{' or '.join(names)} is not on PATH: {INSTALL_HINT}")


def executables() -> dict[str, str]:
    """Prometheus's and Alertmanager's binaries, by the name of their log and pid files."""
    return {"prometheus": binary("prometheus"), "alertmanager": binary("prometheus-alertmanager", "alertmanager")}


def promtool(args: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run Prometheus's `promtool` (check config/rules, test rules); the caller reads returncode and output."""
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=timeout_s)


def prometheus_config(rules: Path, ray_sd_file: Path, prometheus_port: int, alertmanager_port: int, scrape_interval_s: int,
                      evaluation_interval_s: int) -> dict:
    """Scrape Ray's nodes (the targets Ray writes for Prometheus), ourselves and Alertmanager; alert through Alertmanager."""

    def itself(job: str, port: int) -> dict:
        return {"job_name": job, "static_configs": [{"targets": [f"{HOST}:{port}"]}]}

    return {
        "global": {"scrape_interval": f"{scrape_interval_s}s", "evaluation_interval": f"{evaluation_interval_s}s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{alertmanager_port}"]}]}]},
        "scrape_configs": [
            # re-read as often as we scrape: Ray replaces the file inside its session dir, a change the file watch on
            # the link's directory does not see, and a new Ray session must not wait the default 5 minutes
            {"job_name": "ray", "file_sd_configs": [{"files": [str(ray_sd_file)], "refresh_interval": f"{scrape_interval_s}s"}]},
            itself("prometheus", prometheus_port),
            itself("alertmanager", alertmanager_port),
        ],
    }


def alertmanager_config(webhook_url: str | None, group_wait_s: int) -> dict:
    """One notification per alert and specialist; to the webhook if given, else only shown by Alertmanager's UI and API."""
    receiver = {"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]} if webhook_url \
        else {"name": "alertmanager-ui-only"}
    return {"route": {"receiver": receiver["name"], "group_by": GROUP_BY, "group_wait": f"{group_wait_s}s"},
            "receivers": [receiver]}


@dataclass
class Servers:
    """The running pair; a context manager that stops them."""

    prometheus_url: str
    alertmanager_url: str
    state_dir: Path
    processes: dict[str, subprocess.Popen]  # "alertmanager", "prometheus"

    @property
    def prometheus_pid(self) -> int:
        return self.processes["prometheus"].pid

    @property
    def alertmanager_pid(self) -> int:
        return self.processes["alertmanager"].pid

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Until both answer /-/ready; fail at once, with the log's end, if one exits (a taken port, a bad config)."""
        urls = {"prometheus": self.prometheus_url, "alertmanager": self.alertmanager_url}
        probes = {name: (self.processes[name], partial(_ready, url)) for name, url in urls.items()}
        daemon.wait_ready(self.state_dir, probes, timeout_s, ServersError)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM both, wait, SIGKILL what is left after `grace_s`; psutil reaps our children, so no zombie stays."""
        daemon.stop(self.state_dir, self.processes, grace_s)


def start(profile: Profile, state_dir: Path, ray_sd_file: Path, *, prometheus_port: int = 9090, alertmanager_port: int = 9093,
          scrape_interval_s: int = 5, evaluation_interval_s: int = 5, webhook_url: str | None = None,
          group_wait_s: int = 10) -> Servers:
    """Write the configs and rules under `state_dir` and start both; returns at once (then `wait_ready`).

    Start them from a thread that lives as long as they should (the main thread): their parent-death signal follows it.
    """
    binaries = executables()
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    stop_leftovers(state_dir)
    if prometheus_port == alertmanager_port:
        raise ServersError(f"Prometheus and Alertmanager cannot share port {prometheus_port}")
    for name, port in (("prometheus", prometheus_port), ("alertmanager", alertmanager_port)):
        daemon.check_free(name, port, f"{name}_port", ServersError)
    rules = write_rules(profile, state_dir / "rules.yml")
    _write_yaml(state_dir / "prometheus.yml", prometheus_config(rules, ray_sd_file, prometheus_port, alertmanager_port,
                                                                 scrape_interval_s, evaluation_interval_s))
    _write_yaml(state_dir / "alertmanager.yml", alertmanager_config(webhook_url, group_wait_s))
    prometheus_url, alertmanager_url = f"http://{HOST}:{prometheus_port}", f"http://{HOST}:{alertmanager_port}"
    processes = {"alertmanager": daemon.launch(state_dir, "alertmanager", [
        binaries["alertmanager"], f"--config.file={state_dir / 'alertmanager.yml'}",
        f"--storage.path={state_dir / 'alertmanager-data'}", f"--web.listen-address={HOST}:{alertmanager_port}",
        f"--web.external-url={alertmanager_url}",
        "--cluster.listen-address=",  # empty: a single Alertmanager, no gossip port
    ])}
    servers = Servers(prometheus_url, alertmanager_url, state_dir, processes)
    try:
        processes["prometheus"] = daemon.launch(state_dir, "prometheus", [
            binaries["prometheus"], f"--config.file={state_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={state_dir / 'prometheus-data'}", f"--web.listen-address={HOST}:{prometheus_port}",
            f"--web.external-url={prometheus_url}",
        ])
    except BaseException:
        servers.stop()
        raise
    return servers


def stop_leftovers(state_dir: Path, grace_s: float = STOP_GRACE_S) -> None:
    """Stop what a crashed run left in `state_dir`: the pid files' processes, if still Prometheus or Alertmanager there."""
    daemon.stop_leftovers(state_dir, executables(), grace_s)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _write_yaml(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=1000))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.observe.servers", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="local")
    parser.add_argument("--state-dir", type=Path, default=default_cache_dir() / "observe" / "servers")
    parser.add_argument("--ray-sd-file", type=Path, default=RAY_SD_FILE)
    parser.add_argument("--webhook-url", help="where Alertmanager posts notifications (default: its UI and API only)")
    ns = parser.parse_args(argv)
    hold(start(load_profile(ns.profile), ns.state_dir, ns.ray_sd_file, webhook_url=ns.webhook_url), _announce, ServersError)


def _announce(servers: Servers) -> None:
    servers.wait_ready()
    print(f"Prometheus {servers.prometheus_url}  Alertmanager {servers.alertmanager_url}  (state in {servers.state_dir}); "
          "Ctrl-C stops them", flush=True)

if __name__ == "__main__":
    main()
