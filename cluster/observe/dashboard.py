"""Grafana's side of observability: the "Specialist router" dashboard and the Grafana-managed alert rules as Grafana 11
JSON, built with grafana-foundation-sdk from panels.py and alerts.py; push.py sends both to a Grafana.

`python -m cluster.observe dashboard --out specialist-router.json` writes the dashboard for a hand import.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path

from grafana_foundation_sdk.builders import alerting, common, dashboard, expr, heatmap, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.alerting import RelativeTimeRange
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DashboardLinkType, DataSourceRef, VariableOption
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from cluster.observe import panels
from cluster.observe.alerts import GROUP, Alert
from cluster.observe.panels import Panel, Query
from cluster.observe.rules import duration

DATASOURCE_UID = "specialist-router-prometheus"
DATASOURCE_NAME = "Prometheus (specialist router)"
# Panels ask the `datasource` variable, which defaults to ours: a hand import into another Grafana picks its own Prometheus.
PANEL_DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
PANEL_WIDTH, PANEL_HEIGHT = 12, 8  # two panels a line on Grafana's 24-column grid
STACKED_FILL_OPACITY = 30
RULE_QUERY_WINDOW_S = 600  # the instant query's time range; each expr carries its own [window]
PROMETHEUS_VALUE = re.compile(r"\$value\b")  # Prometheus' float; Grafana's $value is a string of every query's values


def _target(query: Query, ref_id: str, kind: str) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref_id).range()
    target.datasource(PANEL_DATASOURCE)
    return target.format(PromQueryFormat.HEATMAP) if kind == "heatmap" else target


def _panel(panel: Panel, panel_id: int) -> timeseries.Panel | heatmap.Panel:
    if panel.kind == "heatmap":
        built = heatmap.Panel().calculate(False).y_axis(heatmap.YAxisConfig().unit(panel.unit))
    else:
        built = timeseries.Panel().unit(panel.unit)
        if panel.stacked:
            built.stacking(common.StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(STACKED_FILL_OPACITY)
    built.id(panel_id).title(panel.title).description(panel.description).datasource(PANEL_DATASOURCE)
    built.span(PANEL_WIDTH).height(PANEL_HEIGHT)
    for index, query in enumerate(panel.queries):
        built.with_target(_target(query, chr(ord("A") + index), panel.kind))
    return built


def build_dashboard() -> dashboard.Dashboard:
    """One expanded Grafana row per panels.ROWS row, its panels after it (Grafana nests panels only in collapsed rows)."""
    board = (dashboard.Dashboard(panels.DASHBOARD_TITLE).uid(panels.DASHBOARD_UID).tags(["specialist-router"])
             .time("now-1h", "now").refresh("30s").timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR)
             .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
                            .current(VariableOption(text=DATASOURCE_NAME, value=DATASOURCE_UID)))
             .links([dashboard.DashboardLink(title).type(DashboardLinkType.LINK).url(f"/d/{uid}").keep_time(True)
                     for title, uid in panels.RAY_DASHBOARDS]))
    ids = itertools.count(1)
    for row in panels.ROWS:
        board.with_row(dashboard.Row(row.title).id(next(ids)))
        for panel in row.panels:
            board.with_panel(_panel(panel, next(ids)))
    return board


def dashboard_json() -> dict:
    return json.loads(json.dumps(build_dashboard().build(), cls=JSONEncoder))


def write_dashboard(path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dashboard_json(), indent=2) + "\n")
    return path


def rule_uid(alert: Alert) -> str:
    """Stable across pushes and unique per name and labels, within Grafana's 40 characters of [a-z0-9-]."""
    digest = hashlib.sha1(repr((alert.name, alert.labels)).encode()).hexdigest()[:8]
    return f"sr-{alert.name.lower()[:27]}-{digest}"


def rule_title(alert: Alert) -> str:
    """Grafana wants titles unique within a folder, so a per-specialist rule names its specialist."""
    return f"{alert.name} ({', '.join(value for _, value in alert.labels)})" if alert.labels else alert.name


def build_rule(alert: Alert) -> alerting.Rule:
    """C is `$B == $B` (all but NaN), not `$B > 0`: the expr holds its comparison, so all it returns fires, `up == 0`'s 0 too."""
    query = prometheus.Dataquery().expr(alert.expr).instant().ref_id("A")
    last = expr.TypeReduce().expression("A").reducer("last").ref_id("B")
    fires = expr.TypeMath().expression("$B == $B").ref_id("C")
    return (alerting.Rule(rule_title(alert)).uid(rule_uid(alert)).folder_uid(panels.FOLDER_UID).rule_group(GROUP)
            .queries([alerting.Query("A").datasource_uid(DATASOURCE_UID).model(query)
                      .relative_time_range(RelativeTimeRange(from_val=RULE_QUERY_WINDOW_S, to=0)),
                      alerting.Query("B").datasource_uid("__expr__").model(last),
                      alerting.Query("C").datasource_uid("__expr__").model(fires)])
            .condition("C").for_val(duration(alert.for_s)).no_data_state("OK").exec_err_state("Error")
            .labels({"severity": alert.severity, **dict(alert.labels)})
            .annotations({"summary": PROMETHEUS_VALUE.sub("$values.B.Value", alert.summary)}))


def rules_json(alerts: list[Alert]) -> list[dict]:
    return json.loads(json.dumps([build_rule(alert).build() for alert in alerts], cls=JSONEncoder))
