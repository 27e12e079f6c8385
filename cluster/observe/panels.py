"""The "Specialist router" dashboard, defined once: Grafana's JSON (dashboard.py) and the PNGs drawn without Grafana
(render.py) are both built from these panels, and the tests run every query against the real Prometheus.

Metric names are what Prometheus scrapes: ours from serve/metrics.py (Ray prefixes `ray_`), Serve's `ray_serve_*` and
vLLM's engine metrics as Ray re-exports them, `ray_vllm_*` (labelled by `model_name`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DASHBOARD_UID = "specialist-router"
DASHBOARD_TITLE = "Specialist router"
FOLDER_UID = "specialist-router"
FOLDER_TITLE = "Specialist router"
RATE_WINDOW = "1m"  # short enough that a load test's windows show; Prometheus needs >= 4 scrapes in it
QUANTILES = (0.5, 0.95, 0.99)
RAY_DASHBOARDS = (("Ray Serve", "rayServeDashboard"), ("Ray Serve deployment", "rayServeDeploymentDashboard"),
                  ("Ray Serve LLM (vLLM engines)", "rayServeLlmDashboard"))
SERVER_ERRORS = 'outcome=~"overloaded|unavailable|timeout|error"'  # the client_error outcome is the client's fault


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str  # Grafana's legend format, e.g. "{{specialist}} p95"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"  # a Grafana unit id: short, s, reqps, percentunit, ...
    kind: Literal["timeseries", "heatmap"] = "timeseries"
    stacked: bool = False
    description: str = ""


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _rate(metric: str, by: str = "specialist", selector: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE_WINDOW}]))"


def _quantiles(metric: str, by: str = "specialist") -> tuple[Query, ...]:
    """p50/p95/p99 of a histogram per `by` label (empty `by`: over everything)."""
    keys = f"le, {by}" if by else "le"
    label = f"{{{{{by}}}}} " if by else ""
    return tuple(Query(f"histogram_quantile({q}, sum by ({keys}) (rate({metric}_bucket[{RATE_WINDOW}])))",
                       f"{label}p{round(q * 100)}") for q in QUANTILES)


def _mean(metric: str, by: str = "specialist") -> str:
    return f"{_rate(metric + '_sum', by)} / {_rate(metric + '_count', by)}"


def _gauge(metric: str, how: str, by: str) -> str:
    """A gauge's peak over the window: Ray exports a gauge only while it is being set (vLLM sets its own on each engine
    step, Serve's controller re-sets an unchanged one every 10 s), so between sets there is no sample, and an instant
    query of the gauge itself would mostly find it stale."""
    return f"{how} by ({by}) (max_over_time({metric}[{RATE_WINDOW}]))"


def _heatmap(metric: str) -> tuple[Query, ...]:
    return (Query(f"sum by (le) (increase({metric}_bucket[{RATE_WINDOW}]))", "{{le}}"),)


ROWS: tuple[Row, ...] = (
    Row("Traffic", (
        Panel("Requests/s by specialist", (Query(_rate("ray_router_requests_total"), "{{specialist}}"),), "reqps", stacked=True,
              description="every request the router answered or refused, by the specialist that answered ('none': refused "
                          "before one was chosen)"),
        Panel("Server-error ratio", (Query(f"sum(rate(ray_router_requests_total{{{SERVER_ERRORS}}}[{RATE_WINDOW}])) / "
                                           f"clamp_min(sum(rate(ray_router_requests_total[{RATE_WINDOW}])), 1e-9)", "errors"),),
              "percentunit", description="503/504 and internal errors over all requests; clients' 4xx are not errors here"),
        Panel("Requests by outcome", (Query(_rate("ray_router_requests_total", "outcome"), "{{outcome}}"),), "reqps",
              stacked=True),
        Panel("In flight, as the router saw it", (Query(_gauge("ray_router_inflight", "sum", "specialist"), "{{specialist}}"),)),
    )),
    Row("Latency", (
        Panel("End-to-end latency", _quantiles("ray_router_request_seconds"), "s"),
        Panel("Time to first token (streams)", _quantiles("ray_router_ttft_seconds"), "s"),
        Panel("Inter-token latency (streams)", _quantiles("ray_router_itl_seconds"), "s"),
        Panel("Time to first token, all specialists", _heatmap("ray_router_ttft_seconds"), "s", kind="heatmap"),
    )),
    Row("Routing", (
        Panel("Routing mix", (Query(_rate("ray_router_decisions_total"), "{{specialist}}"),), "reqps", stacked=True,
              description="the specialist each decision chose first"),
        Panel("Decision reasons", (Query(_rate("ray_router_decisions_total", "reason"), "{{reason}}"),), "reqps", stacked=True),
        Panel("Fallbacks from → to", (Query(_rate("ray_router_fallbacks_total", "from_specialist, to_specialist, cause"),
                                            "{{from_specialist}} → {{to_specialist}} ({{cause}})"),), "reqps"),
        Panel("Scorer margin (top-1 minus top-2 quality)", _heatmap("ray_router_scorer_margin"), kind="heatmap",
              description="small margins: the scorer barely prefers its choice"),
        Panel("Router overhead (decision time)", _quantiles("ray_router_decision_seconds", ""), "s"),
        Panel("Expected latency, as the router saw it",
              (Query(_gauge("ray_router_expected_latency_seconds", "max", "specialist"), "{{specialist}}"),), "s"),
    )),
    Row("Tokens and ensembles", (
        Panel("Prompt tokens/s", (Query(_rate("ray_router_prompt_tokens_total"), "{{specialist}}"),), stacked=True),
        Panel("Generated tokens/s", (Query(_rate("ray_router_generation_tokens_total"), "{{specialist}}"),), stacked=True),
        Panel("Ensemble stages/s", (Query(_rate("ray_router_ensemble_stages_total", "mode, stage"), "{{mode}} {{stage}}"),),
              "reqps"),
        Panel("Ensemble early stops and response-cache hits",
              (Query(_rate("ray_router_ensemble_early_stops_total", "mode"), "early stop {{mode}}"),
               Query(_rate("ray_router_cache_lookups_total", "result"), "cache {{result}}")), "reqps"),
    )),
    Row("Quality", (
        Panel("Judge score by specialist (sampled answers)", (Query(_mean("ray_router_judge_score"), "{{specialist}}"),),
              "percentunit", description="the online quality monitor: P(correct) from the judge specialist"),
        Panel("Judged answers/s", (Query(_rate("ray_router_judge_score_count"), "{{specialist}}"),), "reqps"),
    )),
    Row("Backends", (
        Panel("vLLM requests running", (Query(_gauge("ray_vllm_num_requests_running", "sum", "model_name"), "{{model_name}}"),)),
        Panel("vLLM requests waiting", (Query(_gauge("ray_vllm_num_requests_waiting", "sum", "model_name"), "{{model_name}}"),)),
        Panel("vLLM KV-cache use", (Query(_gauge("ray_vllm_kv_cache_usage_perc", "max", "model_name"), "{{model_name}}"),),
              "percentunit"),
        Panel("Healthy replicas by deployment", (Query(_gauge("ray_serve_deployment_replica_healthy", "sum", "deployment"),
                                                       "{{deployment}}"),)),
        Panel("Autoscaling target replicas", (Query(_gauge("ray_serve_autoscaling_target_replicas", "max", "deployment"),
                                                    "{{deployment}}"),)),
    )),
)


def panels() -> list[Panel]:
    return [panel for row in ROWS for panel in row.panels]
