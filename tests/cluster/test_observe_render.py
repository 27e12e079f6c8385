"""The dashboard's PNGs (cluster/observe/render.py) drawn from a real Prometheus that scrapes a static exporter of our metric
names every second: one PNG per row and the overview, "no data" in a panel whose metric is absent, a clear error for a
bad query. Needs the `prometheus` binary; no Ray."""

import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import requests
from PIL import Image

from cluster.observe import render
from cluster.observe.panels import ROWS, Panel, Query, Row

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs the prometheus binary")

SCRAPES = 12  # at one a second: enough for the panels' 1m rates to draw lines
SPECIALISTS = ("tiny-coder", "tiny-chat")
TTFT_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # and +Inf
ROWS_WITH_DATA = ("Traffic", "Latency", "Backends")


class StaticExporter:
    """Serves `text(scrape)` as Prometheus text on 127.0.0.1 from a thread; `scrapes` counts the GETs so far."""

    def __init__(self, text: Callable[[int], str]) -> None:
        self.scrapes = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                exporter.scrapes += 1
                body = text(exporter.scrapes).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # a line per scrape would drown the test's output
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StaticExporter":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def router_metrics(n: int) -> str:
    """Our metric names at the n-th scrape: traffic that grows over the run and TTFTs that drift slower."""
    lines = ["# TYPE ray_router_requests_total counter"]
    for i, name in enumerate(SPECIALISTS):
        lines.append(f'ray_router_requests_total{{specialist="{name}",outcome="ok",stream="false"}} {(3 - i) * n + n * n // 10}')
    lines.append(f'ray_router_requests_total{{specialist="tiny-chat",outcome="overloaded",stream="true"}} {n // 3}')
    lines.append("# TYPE ray_router_ttft_seconds histogram")
    for i, name in enumerate(SPECIALISTS):
        cumulative = 0
        for b, bound in enumerate(TTFT_BOUNDS):
            cumulative += n * (len(TTFT_BOUNDS) - b) ** 2 + n * n * b * (i + 1) // 10
            lines.append(f'ray_router_ttft_seconds_bucket{{specialist="{name}",le="{bound}"}} {cumulative}')
        cumulative += n
        lines.append(f'ray_router_ttft_seconds_bucket{{specialist="{name}",le="+Inf"}} {cumulative}')
        lines += [f'ray_router_ttft_seconds_sum{{specialist="{name}"}} {cumulative * 0.3}',
                  f'ray_router_ttft_seconds_count{{specialist="{name}"}} {cumulative}']
    lines.append("# TYPE ray_vllm_num_requests_running gauge")
    lines += [f'ray_vllm_num_requests_running{{model_name="{name}"}} {n % 4 + i}' for i, name in enumerate(SPECIALISTS)]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Scraped:
    url: str
    window: render.Window  # from Prometheus' start to when SCRAPES scrapes were stored


def _is_ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def _stop(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """A real Prometheus that has scraped a StaticExporter of router_metrics SCRAPES times, one a second."""
    home = tmp_path_factory.mktemp("prometheus")
    with StaticExporter(router_metrics) as exporter:
        config = home / "prometheus.yml"
        config.write_text("global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
                          f"scrape_configs: [{{job_name: router, static_configs: [{{targets: ['{exporter.address}']}}]}}]\n")
        url = f"http://127.0.0.1:{free_port()}"
        start = time.time()
        with open(home / "prometheus.log", "wb") as log:
            process = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
                                        f"--web.listen-address={url.removeprefix('http://')}"],
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 35
            while not (exporter.scrapes >= SCRAPES and _is_ready(url)):
                assert process.poll() is None and time.monotonic() < deadline, (home / "prometheus.log").read_text()[-2000:]
                time.sleep(0.5)
            time.sleep(0.5)  # the last scrape's samples are appended
            yield Scraped(url, render.Window(math.floor(start), math.floor(time.time()), 1))
        finally:
            _stop(process)


def _colourful_pixels(path: Path) -> int:
    """Pixels in a clear colour: lines, stacked areas and heatmap cells (text, axes and "no data" are grey)."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def test_render_writes_a_png_per_row_and_the_overview(scraped: Scraped, tmp_path: Path):
    window = scraped.window
    paths = render.render(scraped.url, tmp_path / "run", window.start, window.end, step_s=1)
    expected = [f"dashboard-{title}.png" for title in ("traffic", "latency", "routing", "tokens-and-ensembles", "quality",
                                                       "backends")] + ["dashboard.png"]
    assert [path.name for path in paths] == expected
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 1000 and len(image.convert("RGB").getcolors(1 << 24)) > 2
    with_data = tuple(row for row in ROWS if row.title in ROWS_WITH_DATA)
    blank = render.render(scraped.url, tmp_path / "blank", window.start - 3600, window.end - 3600, step_s=1, rows=with_data)
    for empty in blank:
        assert _colourful_pixels(empty) < 50, f"{empty.name}: a window before any scrape should have no data at all"
        assert _colourful_pixels(tmp_path / "run" / empty.name) > 1000, f"{empty.name} draws no series"


def _panel(title: str) -> Panel:
    return next(panel for row in ROWS for panel in row.panels if panel.title == title)


def _draw(scraped: Scraped, panel: Panel) -> plt.Axes:
    fig, ax = plt.subplots()
    render.draw_panel(ax, panel, render.fetch(scraped.url, panel, scraped.window), scraped.window)
    plt.close(fig)
    return ax


def test_a_panel_whose_metric_is_absent_says_no_data(scraped: Scraped):
    absent = _draw(scraped, _panel("Fallbacks from → to"))
    assert [text.get_text() for text in absent.texts] == ["no data"] and not absent.lines
    stacked = _draw(scraped, _panel("Requests/s by specialist"))
    assert not stacked.texts and {text.get_text() for text in stacked.get_legend().get_texts()} == set(SPECIALISTS)
    heatmap = _draw(scraped, _panel("Time to first token, all specialists"))
    assert not heatmap.texts and heatmap.collections and "+Inf" in [label.get_text() for label in heatmap.get_yticklabels()]


def test_a_bad_query_names_the_panel_and_the_query(scraped: Scraped, tmp_path: Path):
    broken = Query("sum by (specialist (rate(ray_router_requests_total[1m]))", "{{specialist}}")
    rows = (Row("Broken", (Panel("A broken panel", (broken,)),)),)
    with pytest.raises(render.QueryError, match="'A broken panel'.*HTTP 400.*bad_data") as error:
        render.render(scraped.url, tmp_path, scraped.window.start, scraped.window.end, rows=rows)
    assert broken.expr in str(error.value)


def test_legends_and_units_read_as_in_grafana():
    labels = {"from_specialist": "tiny-coder", "to_specialist": "tiny-chat", "cause": "unavailable"}
    assert render.legend("{{from_specialist}} → {{ to_specialist }} ({{cause}}) {{missing}}", labels) == \
        "tiny-coder → tiny-chat (unavailable) "
    values = ((0.25, "s"), (2, "s"), (0.125, "percentunit"), (1.5, "reqps"), (3, "short"))
    assert [render.unit_text(value, unit) for value, unit in values] == ["250 ms", "2 s", "12.5%", "1.5 req/s", "3"]


def test_main_renders_the_last_minutes(scraped: Scraped, tmp_path: Path, capsys: pytest.CaptureFixture):
    render.main(["--prometheus-url", scraped.url, "--out", str(tmp_path), "--minutes", "1"])
    printed = capsys.readouterr().out.split()
    assert printed[-1] == str(tmp_path / "dashboard.png") and all(Path(path).is_file() for path in printed)
