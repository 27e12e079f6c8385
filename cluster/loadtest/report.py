"""Turn a load test's per-request results and Serve samples into the report (JSON) and its plots (PNG)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cluster.loadtest.shapes import LoadShape  # noqa: E402

WINDOWS = 20  # time windows per run in the report and plots (at least MIN_WINDOW_S each)
MIN_WINDOW_S = 2.0
ENGINE_PREFIX = "LLMServer:"


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _error_kind(error: str) -> str:
    """Group error texts: the HTTP reason, or the exception's last line (a traceback's first line says nothing)."""
    return (error.strip().splitlines() or ["unknown"])[-1][:80]


def _windows(results: list[dict], end_s: float, width: float) -> list[dict]:
    rows = []
    for start in np.arange(0.0, end_s, width):
        sent = [r for r in results if start <= r["sent_s"] < start + width]
        ok = [r for r in sent if r["success"]]
        done = [r for r in results if r["success"] and start <= r["sent_s"] + r["latency"] < start + width]
        rows.append(
            {
                "t": float(start),
                "sent": len(sent),
                "errors": len(sent) - len(ok),
                "latency_s": _percentiles([r["latency"] for r in ok]),
                "ttft_s": _percentiles([r["ttft"] for r in ok]),
                "completed_per_s": round(len(done) / width, 3),
                "tokens_per_s": round(sum(r["output_tokens"] for r in done) / width, 2),
            }
        )
    return rows


def _routing_mix(samples: list[dict]) -> dict[str, int]:
    """Requests each specialist received during the run: the growth of Serve's request counter."""
    counted = [s["requests"] for s in samples if "requests" in s]
    if len(counted) < 2:
        return {}
    first, last = counted[0], counted[-1]
    return {
        name.removeprefix(ENGINE_PREFIX): round(last[name] - first.get(name, 0.0))
        for name in sorted(last)
        if name.startswith(ENGINE_PREFIX)
    }


def _autoscaling(samples: list[dict], load_step_s: float | None) -> dict[str, dict]:
    """Per specialist: replicas at start and max, and when the autoscaler decided and the new replica served."""
    timeline = [s for s in samples if "deployments" in s]
    events: dict[str, dict] = {}
    if not timeline:
        return events
    for name in timeline[0]["deployments"]:
        if not name.startswith(ENGINE_PREFIX):
            continue
        series = [(s["t"], s["deployments"].get(name, {})) for s in timeline]
        initial = series[0][1].get("running", 0)
        peak = max(d.get("running", 0) for _, d in series)
        row: dict = {"initial_replicas": initial, "max_replicas_seen": peak}
        up_decided = next((t for t, d in series if (d.get("target") or 0) > initial), None)
        up_serving = next((t for t, d in series if d.get("running", 0) > initial), None)
        if up_decided is not None:
            row["scale_up_decided_s"] = up_decided
            row["scale_up_serving_s"] = up_serving
            if load_step_s is not None:
                row["decision_after_load_step_s"] = round(up_decided - load_step_s, 1)
            if up_serving is not None:
                row["new_replica_start_s"] = round(up_serving - up_decided, 1)
                back = next((t for t, d in series if t > up_serving and d.get("running", 0) <= initial), None)
                row["scaled_back_down_s"] = back
        events[name.removeprefix(ENGINE_PREFIX)] = row
    return events


def summarise(config: dict, shape: LoadShape, results: list[dict], samples: list[dict]) -> dict:
    ok = [r for r in results if r["success"]]
    end_s = max([r["sent_s"] + r["latency"] for r in results] + [s["t"] for s in samples] + [shape.duration_s])
    wall_s = max((r["sent_s"] + r["latency"] for r in ok), default=0.0)
    summary = {
        "requests": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "errors": dict(Counter(_error_kind(r["error"]) for r in results if not r["success"])),
        "latency_s": _percentiles([r["latency"] for r in ok]),
        "ttft_s": _percentiles([r["ttft"] for r in ok]),
        "throughput_req_per_s": round(len(ok) / wall_s, 3) if wall_s else 0.0,
        "throughput_tokens_per_s": round(sum(r["output_tokens"] for r in ok) / wall_s, 2) if wall_s else 0.0,
        "routing_mix": _routing_mix(samples),
        "answered_by": dict(Counter(r["answered_by"] for r in ok if r.get("answered_by"))),
        "mean_predicted_quality": _mean([r["predicted_quality"] for r in ok if r.get("predicted_quality") is not None]),
        "autoscaling": _autoscaling(samples, shape.duration_s / 3 if shape.kind == "step" else None),
    }
    width = max(MIN_WINDOW_S, round(shape.duration_s / WINDOWS))
    windows = _windows(results, end_s, width)
    return {"config": config, "summary": summary, "window_s": width, "windows": windows, "serve": samples, "requests": results}


def write_plot(report: dict, path: Path) -> None:
    """Four panels: latency/TTFT percentiles, throughput and errors, replicas per specialist, routing mix."""
    windows, samples, summary, width = report["windows"], report["serve"], report["summary"], report["window_s"]
    t = [w["t"] + width / 2 for w in windows]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    ax = axes[0][0]
    for key, style in (("latency_s", "-"), ("ttft_s", "--")):
        for q in ("p50", "p95", "p99"):
            ax.plot(t, [w[key][q] if w[key][q] is not None else np.nan for w in windows], style, label=f"{key[:-2]} {q}")
    ax.set(title="latency and time to first token (by send time)", xlabel="s", ylabel="s")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[0][1]
    ax.plot(t, [w["completed_per_s"] for w in windows], label="completed req/s")
    ax.plot(t, [w["sent"] / width for w in windows], label="offered req/s")
    ax.bar(t, [w["errors"] for w in windows], width=width * 0.8, color="red", alpha=0.4, label="errors (count)")
    ax.set(title=f"throughput ({summary['failed']} failed of {summary['requests']})", xlabel="s")
    ax.legend(fontsize=7)
    ax = axes[1][0]
    timeline = [s for s in samples if "deployments" in s]
    names = sorted({n for s in timeline for n in s["deployments"] if n.startswith(ENGINE_PREFIX)})
    for name in names:
        line = ax.step([s["t"] for s in timeline], [s["deployments"].get(name, {}).get("running", 0) for s in timeline], where="post", label=f"{name.removeprefix(ENGINE_PREFIX)} running")
        ax.step([s["t"] for s in timeline], [s["deployments"].get(name, {}).get("target") or 0 for s in timeline], "--", where="post", color=line[0].get_color(), alpha=0.6, label="target")
    ax.set(title="replicas per specialist (dashed: autoscaler target)", xlabel="s")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    mix = summary["routing_mix"]
    ax.bar(list(mix), list(mix.values()))
    ax.set(title="routing mix (requests per specialist)")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
