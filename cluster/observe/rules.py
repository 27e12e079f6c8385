"""The Prometheus rule file of a profile, built from alerts.py so Prometheus and Grafana alert on the same rules."""

from __future__ import annotations

from pathlib import Path

import yaml

from cluster.observe.alerts import GROUP, Alert, alerts
from router.catalog import Profile


def duration(seconds: int) -> str:
    """Prometheus's duration syntax in the largest whole unit ("30m", "2h", "0s"), as people write it."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def rule(alert: Alert) -> dict:
    return {
        "alert": alert.name,
        "expr": alert.expr,
        "for": duration(alert.for_s),
        "labels": {"severity": alert.severity, **dict(alert.labels)},
        "annotations": {"summary": alert.summary},
    }


def rule_file(profile: Profile) -> dict:
    """The YAML structure Prometheus loads with `rule_files`: one group holding every alert of the profile."""
    return {"groups": [{"name": GROUP, "rules": [rule(alert) for alert in alerts(profile)]}]}


def write_rules(profile: Profile, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(rule_file(profile), sort_keys=False, width=1000))
    return path
