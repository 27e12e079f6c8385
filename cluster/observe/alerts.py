"""The alert rules, defined once for a profile: the Prometheus rule file (rules.py) and Grafana's alert rules
(dashboard.py) are both built from these, and the tests evaluate every expression against the real Prometheus.

Thresholds come from the profile's `observability` section and each specialist's `ttft_objective_s` in models.yaml,
so the rules are per profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.observe.panels import SERVER_ERRORS
from router.catalog import Profile
from serve.cluster_metrics import deployment_name

GROUP = "specialist-router"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str  # fires while this returns any series
    for_s: int  # how long it must hold first
    severity: str  # "page" (someone acts now) or "ticket"
    summary: str  # Prometheus template text; {{ $labels.x }} and {{ $value }} work
    labels: tuple[tuple[str, str], ...] = ()  # extra labels (the specialist of a per-specialist rule)


def _events_in(selector: str, window: str, specialist_label: str = "specialist") -> str:
    """Per specialist, the counter grew within `window`, or its series was born there: Ray cannot export a counter at
    0, so a first failure creates its series at 1, which `increase` alone reads as no change."""
    def per_specialist(offset: str) -> str:
        series = f"{selector}{offset}"
        if specialist_label != "specialist":
            series = f'label_replace({series}, "specialist", "$1", "{specialist_label}", "(.*)")'
        return f"sum by (specialist) ({series})"

    now, before = per_specialist(""), per_specialist(f" offset {window}")
    return f"(({now} - {before} > 0) or ({now} unless {before}))"


def _ratio(numerator: str, denominator: str) -> str:
    return f"({numerator}) / clamp_min({denominator}, 1e-9)"


def alerts(profile: Profile) -> list[Alert]:
    """Every alert of the profile; `for_s` values are for production (tests load them with a short evaluation)."""
    obs = profile.observability
    total = "sum(rate(ray_router_requests_total[5m]))"
    decisions = "sum by (specialist) (rate(ray_router_decisions_total[15m]))"
    all_decisions = "sum(rate(ray_router_decisions_total[15m]))"
    rules = [
        Alert("RouterServerErrors", f"{_ratio(f'sum(rate(ray_router_requests_total{{{SERVER_ERRORS}}}[5m]))', total)} > "
              f"{obs.error_ratio}", 300, "page",
              "{{ $value | humanizePercentage }} of requests end in a server error (503/504/500)"),
        Alert("RouterFallbacks", f"{_ratio('sum(rate(ray_router_fallbacks_total[5m]))', total)} > {obs.fallback_ratio}", 300,
              "ticket", "{{ $value | humanizePercentage }} of requests fell back from the specialist the router chose"),
        Alert("SpecialistFailing", _events_in('ray_router_fallbacks_total{cause=~"unavailable|timeout"}', "2m", "from_specialist")
              + " or " + _events_in('ray_router_requests_total{outcome=~"unavailable|timeout"}', "2m"), 0, "page",
              "{{ $labels.specialist }} failed requests in the last 2 minutes (no healthy replica, or no answer in time)"),
        Alert("SpecialistTakesAllTraffic", f"({decisions}) / scalar(clamp_min({all_decisions}, 1e-9)) > {obs.dominant_share} "
              f"and on() ({all_decisions} > {obs.min_rate_for_mix})", 900, "ticket",
              "{{ $labels.specialist }} is chosen for {{ $value | humanizePercentage }} of requests: the scorer may be stuck"),
        Alert("EngineQueueWaiting",
              f"sum by (model_name) (max_over_time(ray_vllm_num_requests_waiting[1m])) > {obs.waiting_requests}", 300, "ticket",
              "{{ $value }} requests wait for a batch slot on {{ $labels.model_name }}: scale it out"),
        Alert("EngineKVCacheFull",
              f"max by (model_name) (max_over_time(ray_vllm_kv_cache_usage_perc[1m])) > {obs.kv_cache_use}", 300, "ticket",
              "{{ $labels.model_name }}'s KV cache is {{ $value | humanizePercentage }} full: preemptions follow"),
        Alert("JudgeScoreDrop", "(sum by (specialist) (rate(ray_router_judge_score_sum[1h])) / sum by (specialist) "
              "(rate(ray_router_judge_score_count[1h]))) < " f"{obs.judge_drop} * (sum by (specialist) "
              "(rate(ray_router_judge_score_sum[7d])) / sum by (specialist) (rate(ray_router_judge_score_count[7d])))", 1800,
              "ticket", "{{ $labels.specialist }}'s judged quality fell below its 7-day level"),
        Alert("ScrapeTargetDown", "up == 0", 120, "page", "Prometheus cannot scrape {{ $labels.instance }} ({{ $labels.job }})"),
    ]
    traffic = f"on() ({all_decisions} > {obs.min_rate_for_mix})"
    for spec in profile.specialists:
        labels = (("specialist", spec.name),)
        ttft_p95 = ("histogram_quantile(0.95, sum by (le) (rate(ray_router_ttft_seconds_bucket"
                    f'{{specialist="{spec.name}"}}[5m])))')
        rules.append(Alert("TTFTOverObjective", f"{ttft_p95} > {spec.ttft_objective_s}", 300, "ticket",
                           f"{spec.name}'s TTFT p95 is {{{{ $value | humanizeDuration }}}}, over its {spec.ttft_objective_s:g} s "
                           "objective", labels))
        answered = f'sum(increase(ray_router_requests_total{{specialist="{spec.name}", outcome="ok"}}[30m])) > 0'
        deployment = deployment_name(spec.name)
        healthy = f'sum(max_over_time(ray_serve_deployment_replica_healthy{{deployment="{deployment}"}}[1m]))'
        rules.append(Alert("HealthySpecialistIdle", f"({healthy} > 0) unless on() ({answered}) and {traffic}", 1800, "ticket",
                           f"{spec.name} is healthy but answered nothing for 30 minutes under traffic", labels))
    return rules
