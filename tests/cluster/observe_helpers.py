"""Test doubles around a real Prometheus and Alertmanager: an exporter that serves Prometheus text, a webhook receiver
that records Alertmanager's notifications, and Ray's service-discovery file pointing at the exporter.

Both servers are http.servers on 127.0.0.1 in a daemon thread, used as context managers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; another process could take it before we bind it again)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def write_ray_sd_file(path: Path, targets: list[str]) -> Path:
    """The file Ray writes for Prometheus's file_sd_configs, listing `targets` ("host:port") as job `ray`."""
    path.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": targets}]))
    return path


class _Server:
    """An HTTPServer on a free 127.0.0.1 port, serving from a daemon thread until `close()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._http = HTTPServer((HOST, 0), handler)
        self._http.owner = self
        self.address = f"{HOST}:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        """Keep pytest's output to the test's own."""


class MetricsExporter(_Server):
    """Serves `render(scrape)` at /metrics, `scrape` counting from 1, so a counter can grow between scrapes."""

    def __init__(self, render: Callable[[int], str]) -> None:
        self.render = render
        self.scrapes = 0
        super().__init__(_MetricsHandler)


class _MetricsHandler(_Quiet):
    def do_GET(self) -> None:
        exporter: MetricsExporter = self.server.owner
        exporter.scrapes += 1
        body = exporter.render(exporter.scrapes).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class WebhookReceiver(_Server):
    """Records every notification Alertmanager posts (its webhook JSON: status, alerts with labels and annotations)."""

    def __init__(self) -> None:
        self.notifications: list[dict] = []
        self._arrived = threading.Condition()
        super().__init__(_WebhookHandler)
        self.url = f"http://{self.address}/alerts"

    def received(self, notification: dict) -> None:
        with self._arrived:
            self.notifications.append(notification)
            self._arrived.notify_all()

    def wait_for_alert(self, alertname: str, timeout_s: float, status: str = "firing", **labels: str) -> dict:
        """The first alert named `alertname` with `status` and these labels, waiting up to `timeout_s` for it."""
        deadline, wanted = time.monotonic() + timeout_s, {"alertname": alertname, **labels}
        with self._arrived:
            while True:
                for notification in self.notifications:
                    for alert in notification["alerts"]:
                        if alert["status"] == status and wanted.items() <= alert["labels"].items():
                            return alert
                if not self._arrived.wait(deadline - time.monotonic()):
                    raise AssertionError(f"no {status} {alertname} {labels or ''} within {timeout_s} s; "
                                         f"received: {json.dumps(self.notifications)[:2000]}")


class _WebhookHandler(_Quiet):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.owner.received(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
