"""The dashboard drawn as PNGs from a real Prometheus, for where no Grafana runs (load-test reports, docs): one PNG per
row and dashboard.png with every panel, from the same panel definitions as Grafana's JSON (panels.py).

`python -m cluster.observe render --prometheus-url http://127.0.0.1:9090 --out .cache/dashboard --minutes 15`
"""

from __future__ import annotations

import argparse
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from cluster.observe import panels  # noqa: E402
from cluster.observe.panels import Panel, Query, Row  # noqa: E402

MAX_POINTS = 240  # per series when no step is given: a readable line, far below Prometheus' 11,000-point cap
TIMEOUT_S = 30.0
LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
Fetched = list[tuple[Query, list[dict]]]  # each query of a panel with its series, as Prometheus gives them


class QueryError(RuntimeError):
    """Prometheus refused a panel's query; the message names both, so the definition in panels.py can be fixed."""


@dataclass(frozen=True)
class Window:
    start: int  # Unix seconds
    end: int
    step_s: float

    @property
    def times(self) -> np.ndarray:
        """The steps Prometheus evaluates a range query at: start, start + step, ... <= end."""
        return self.start + self.step_s * np.arange(math.floor((self.end - self.start) / self.step_s + 1e-9) + 1)


def _dates(times: np.ndarray) -> np.ndarray:
    return mdates.date2num([datetime.fromtimestamp(t) for t in times])


def query_range(prometheus_url: str, panel: Panel, query: Query, window: Window) -> list[dict]:
    response = requests.get(f"{prometheus_url.rstrip('/')}/api/v1/query_range", timeout=TIMEOUT_S,
                            params={"query": query.expr, "start": window.start, "end": window.end, "step": window.step_s})
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    if response.status_code != 200 or body.get("status") != "success":
        raise QueryError(f"panel {panel.title!r}: Prometheus answered HTTP {response.status_code} "
                         f"({body.get('errorType', '?')}: {body.get('error', '')}) to the query {query.expr}")
    return body["data"]["result"]


def fetch(prometheus_url: str, panel: Panel, window: Window) -> Fetched:
    return [(query, query_range(prometheus_url, panel, query, window)) for query in panel.queries]


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legend format: `{{label}}` replaced by the series' value of that label."""
    return LABEL.sub(lambda match: labels.get(match.group(1), ""), template)


def on_grid(values: list[list], window: Window) -> np.ndarray:
    """A series at every step of the window: NaN where Prometheus had no sample (a gap) or an infinity."""
    line = np.full(len(window.times), np.nan)
    for t, value in values:
        line[round((float(t) - window.start) / window.step_s)] = float(value)
    line[np.isinf(line)] = np.nan
    return line


def unit_text(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value * 100:.3g}%"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if 0 < abs(value) < 1 else f"{value:.3g} s"
    return f"{value:.3g} req/s" if unit == "reqps" else f"{value:.3g}"


def _draw_lines(ax, panel: Panel, fetched: Fetched, window: Window) -> None:
    named = [(legend(query.legend, s["metric"]), on_grid(s["values"], window)) for query, series in fetched for s in series]
    x = _dates(window.times)
    if panel.stacked:
        ax.stackplot(x, *(np.nan_to_num(line) for _, line in named), labels=[name for name, _ in named], alpha=0.85)
    else:
        for name, line in named:
            ax.plot(x, line, label=name)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: unit_text(value, panel.unit)))
    ax.legend(fontsize="x-small", loc="upper left")


def _draw_heatmap(ax, panel: Panel, fetched: Fetched, window: Window) -> None:
    """Grafana's bucket heatmap: the cumulative `le` buckets turned into counts per bucket, one row per upper bound."""
    series = sorted((s for _, found in fetched for s in found), key=lambda s: float(s["metric"]["le"]))
    bounds = [float(s["metric"]["le"]) for s in series]
    cumulative = np.nan_to_num(np.array([on_grid(s["values"], window) for s in series]))
    counts = np.diff(cumulative, axis=0, prepend=0)
    edges = _dates(np.append(window.times, window.times[-1] + window.step_s) - window.step_s / 2)
    mesh = ax.pcolormesh(edges, np.arange(len(bounds) + 1), np.ma.masked_less_equal(counts, 0), cmap="viridis")
    ticks = range(0, len(bounds), max(1, len(bounds) // 8))
    ax.set_yticks([i + 0.5 for i in ticks], [unit_text(bounds[i], panel.unit) if math.isfinite(bounds[i]) else "+Inf"
                                              for i in ticks])
    ax.figure.colorbar(mesh, ax=ax, label="count")


def draw_panel(ax, panel: Panel, fetched: Fetched, window: Window) -> None:
    """One panel on `ax`; a panel whose queries found no series says "no data" instead of drawing nothing."""
    ax.set_title(panel.title, fontsize="medium")
    if not any(series for _, series in fetched):
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_yticks([])
    elif panel.kind == "heatmap":
        _draw_heatmap(ax, panel, fetched, window)
    else:
        _draw_lines(ax, panel, fetched, window)
    ax.set_xlim(*_dates(np.array([window.start, window.end])))
    locator = mdates.AutoDateLocator(maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=False))  # the title has the date


def _write_grid(title: str, drawn: list[tuple[Panel, Fetched]], window: Window, path: Path, columns: int,
                panel_inches: tuple[float, float], font_size: float) -> Path:
    columns = min(columns, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    with plt.rc_context({"font.size": font_size}):
        fig, axes = plt.subplots(rows, columns, figsize=(columns * panel_inches[0], rows * panel_inches[1]), squeeze=False,
                                 layout="constrained")
        for ax, (panel, fetched) in zip(axes.flat, drawn):
            draw_panel(ax, panel, fetched, window)
        for ax in axes.flat[len(drawn):]:
            ax.set_visible(False)
        fig.suptitle(f"{title}   ({datetime.fromtimestamp(window.start):%Y-%m-%d %H:%M:%S} to "
                     f"{datetime.fromtimestamp(window.end):%H:%M:%S}, step {window.step_s:g} s)")
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render(prometheus_url: str, out_dir: Path | str, start: float, end: float, step_s: float | None = None,
           rows: tuple[Row, ...] = panels.ROWS) -> list[Path]:
    """dashboard-<row>.png per row and dashboard.png (every panel, small) over [start, end] (Unix seconds)."""
    if end <= start:
        raise ValueError(f"the window ends ({end}) before it starts ({start})")
    # whole seconds: Prometheus cuts a fractional start or end to the millisecond, and its steps could then differ from ours
    window = Window(math.floor(start), math.floor(end), step_s or max(1, math.ceil((end - start) / MAX_POINTS)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_row = [(row, [(panel, fetch(prometheus_url, panel, window)) for panel in row.panels]) for row in rows if row.panels]
    paths = [_write_grid(f"{panels.DASHBOARD_TITLE}: {row.title}", drawn, window, out / f"dashboard-{_slug(row.title)}.png",
                         3, (6.0, 3.6), 9) for row, drawn in by_row]
    every_panel = [item for _, drawn in by_row for item in drawn]
    paths.append(_write_grid(panels.DASHBOARD_TITLE, every_panel, window, out / "dashboard.png", 5, (4.0, 2.6), 6))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.observe render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus-url", required=True, help="Prometheus' base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--minutes", type=float, default=15.0, help="the window, ending now")
    parser.add_argument("--step", type=float, default=None, help=f"seconds between points (default: window / {MAX_POINTS})")
    args = parser.parse_args(argv)
    end = time.time()
    for path in render(args.prometheus_url, args.out, end - args.minutes * 60, end, args.step):
        print(path)
