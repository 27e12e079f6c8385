"""Grafana as code: push provisions a Grafana (tests/cluster/fake_grafana.py, a fake, not Grafana) with every panel and
alert rule, idempotently; the JSON is Grafana 11's per grafana-foundation-sdk; and installing grafana-client left the
serving stack's own urllib3 in place."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from grafana_client import GrafanaApi
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import alerting, prometheus
from grafana_foundation_sdk.models.dashboard import Dashboard, RowPanel

from cluster.observe import panels, push
from cluster.observe.alerts import GROUP, Alert, alerts
from cluster.observe.dashboard import DATASOURCE_UID, dashboard_json, rule_uid, rules_json, write_dashboard
from cluster.observe.rules import duration
from router.catalog import load_profile
from tests.cluster.fake_grafana import FakeGrafana

TOKEN = "glsa_fake_token_for_tests"
PROMETHEUS_URL = "http://127.0.0.1:9999"
# Run in a fresh interpreter, where urllib3-future's .pth (if installed) has already replaced site-packages/urllib3 in place:
# same __file__, but the fork's version (2.x.9xx) instead of the one urllib3's own metadata names, and its sync marker.
URLLIB3_PROBE = """
import importlib.metadata, json, os, site, urllib3, ray, vllm, grafana_client, niquests
print(json.dumps({"file": urllib3.__file__, "version": urllib3.__version__, "installed": importlib.metadata.version("urllib3"),
                  "ray_dir": os.path.dirname(os.path.dirname(ray.__file__)),
                  "fork_marker": os.path.exists(os.path.join(os.path.dirname(urllib3.__file__), ".u3f_sync")),
                  "override_pth": [p for d in site.getsitepackages() for p in os.listdir(d) if p.startswith("urllib3_future")
                                   and p.endswith(".pth")],
                  "niquests_pool": type(niquests.Session().get_adapter("http://x").poolmanager).__module__}))
"""


@pytest.fixture(scope="module")
def tiny():
    return load_profile("tiny")


@pytest.fixture
def grafana():
    with FakeGrafana(TOKEN) as fake:
        yield fake


def _client(grafana: FakeGrafana) -> GrafanaApi:
    return GrafanaApi.from_url(grafana.url, credential=TOKEN)


def _without_empty(value: object) -> object:
    """The SDK fills absent optional objects with {} when it parses; Grafana reads both the same."""
    if isinstance(value, dict):
        return {key: _without_empty(item) for key, item in value.items() if item != {}}
    if isinstance(value, list):
        return [_without_empty(item) for item in value]
    return value


def test_push_provisions_datasource_folder_dashboard_and_every_rule(grafana, tiny):
    result = push.push(grafana.url, TOKEN, tiny, PROMETHEUS_URL)
    client = _client(grafana)

    assert (result["grafana"], result["datasource"], result["folder"]) == ("11.6.0", "created", "created")
    datasource = client.datasource.get_datasource_by_uid(DATASOURCE_UID)
    assert (datasource["type"], datasource["access"], datasource["url"]) == ("prometheus", "proxy", PROMETHEUS_URL)
    assert client.folder.get_folder(panels.FOLDER_UID)["title"] == panels.FOLDER_TITLE

    saved = client.dashboard.get_dashboard(panels.DASHBOARD_UID)
    assert saved["meta"]["folderUid"] == panels.FOLDER_UID and result["dashboard"]["uid"] == panels.DASHBOARD_UID
    board = saved["dashboard"]
    assert [p["title"] for p in board["panels"] if p["type"] == "row"] == [row.title for row in panels.ROWS]
    shown = [p for p in board["panels"] if p["type"] != "row"]
    assert [(p["title"], p["type"]) for p in shown] == [(p.title, p.kind) for p in panels.panels()]
    assert [[(t["expr"], t["legendFormat"]) for t in p["targets"]] for p in shown] == \
        [[(q.expr, q.legend) for q in p.queries] for p in panels.panels()]
    assert [link["url"] for link in board["links"]] == [f"/d/{uid}" for _, uid in panels.RAY_DASHBOARDS]

    wanted = alerts(tiny)
    rules = {rule["uid"]: rule for rule in client.alertingprovisioning.get_alertrules_all()}
    assert sorted(rules) == sorted(rule_uid(alert) for alert in wanted) == result["alert_rules"]["created"]
    for alert in wanted:
        rule = rules[rule_uid(alert)]
        query = rule["data"][0]
        assert (query["datasourceUid"], query["model"]["expr"], query["model"]["instant"]) == (DATASOURCE_UID, alert.expr, True)
        assert (rule["folderUID"], rule["ruleGroup"], rule["for"]) == (panels.FOLDER_UID, GROUP, duration(alert.for_s))
        assert rule["labels"] == {"severity": alert.severity, **dict(alert.labels)}
        assert (rule["condition"], rule["noDataState"]) == ("C", "OK")
        summary = rule["annotations"]["summary"]  # Grafana's $value is every query's values as text, not the float
        assert re.search(r"\$value\b", summary) is None and ("$values.B.Value" in summary) == ("$value" in alert.summary)


def test_second_push_updates_in_place_and_duplicates_nothing(grafana, tiny):
    first = push.push(grafana.url, TOKEN, tiny, PROMETHEUS_URL)
    state = json.dumps([grafana.datasources, grafana.folders, grafana.rules], sort_keys=True)
    board = grafana.dashboards[panels.DASHBOARD_UID]["dashboard"]
    calls_before = len(grafana.calls)

    second = push.push(grafana.url, TOKEN, tiny, PROMETHEUS_URL)

    assert (second["datasource"], second["folder"]) == ("updated", "updated")
    assert second["alert_rules"] == {"created": [], "updated": first["alert_rules"]["created"], "deleted": []}
    assert second["dashboard"]["version"] == first["dashboard"]["version"] + 1
    assert list(grafana.dashboards) == [panels.DASHBOARD_UID]
    assert {**grafana.dashboards[panels.DASHBOARD_UID]["dashboard"], "version": board["version"]} == board
    no_versions = json.dumps([{uid: {**ds, "version": 1} for uid, ds in grafana.datasources.items()},
                              {uid: {**f, "version": 1} for uid, f in grafana.folders.items()}, grafana.rules], sort_keys=True)
    assert no_versions == state
    assert [call for call in grafana.calls[calls_before:] if call[0] == "POST" and call[1] != "/api/dashboards/db"] == []
    assert all(status < 300 for _, _, status in grafana.calls[calls_before:])  # every object found by its uid


def test_push_for_another_profile_replaces_only_our_stale_rules(grafana, tiny):
    push.push(grafana.url, TOKEN, tiny, PROMETHEUS_URL)
    foreign = {**rules_json(alerts(tiny))[0], "uid": "someone-elses-rule", "title": "Someone else's", "ruleGroup": "other"}
    _client(grafana).alertingprovisioning.create_alertrule(foreign)
    local = load_profile("local")

    result = push.push(grafana.url, TOKEN, local, PROMETHEUS_URL)

    tiny_only = {rule_uid(a) for a in alerts(tiny)} - {rule_uid(a) for a in alerts(local)}
    assert tiny_only and set(result["alert_rules"]["deleted"]) == tiny_only
    assert set(grafana.rules) == {rule_uid(a) for a in alerts(local)} | {"someone-elses-rule"}


def test_wrong_token_is_a_clear_error_and_changes_nothing(grafana, tiny):
    with pytest.raises(PermissionError, match=r"refused the token .*Invalid API key.*--token or GRAFANA_TOKEN"):
        push.push(grafana.url, "not-the-token", tiny, PROMETHEUS_URL)
    assert not (grafana.datasources or grafana.folders or grafana.dashboards or grafana.rules)


def test_cli_takes_the_token_from_the_environment(grafana, monkeypatch, capsys):
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert push.main(["--grafana-url", grafana.url, "--profile", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out)["dashboard"]["uid"] == panels.DASHBOARD_UID
    assert grafana.datasources[DATASOURCE_UID]["url"] == push.DEFAULT_PROMETHEUS_URL

    monkeypatch.setenv("GRAFANA_TOKEN", "stale")
    assert push.main(["--grafana-url", grafana.url, "--profile", "tiny"]) == 1
    assert "refused the token" in capsys.readouterr().err


def test_dashboard_and_rules_are_grafana_11_json_per_the_sdk(tmp_path, tiny):
    register_default_plugins()
    written = json.loads(write_dashboard(tmp_path / "dashboard.json").read_text())
    assert written == dashboard_json()
    parsed = Dashboard.from_json(written)
    assert _without_empty(json.loads(json.dumps(parsed, cls=JSONEncoder))) == _without_empty(written)  # nothing the SDK drops
    assert written["schemaVersion"] == parsed.schema_version == 41  # Grafana 11.6's
    shown = [panel for panel in parsed.panels if not isinstance(panel, RowPanel)]
    assert [(panel.type_val, panel.title, panel.description) for panel in shown] == \
        [(spec.kind, spec.title, spec.description) for spec in panels.panels()]
    for panel in shown:
        assert panel.datasource.type_val == "prometheus" and panel.datasource.uid == "${datasource}"
        assert panel.targets and all(isinstance(target, prometheus.Dataquery) for target in panel.targets)
    for panel, spec in zip((p for p in written["panels"] if p["type"] != "row"), panels.panels()):
        if spec.kind == "heatmap":
            assert panel["options"]["yAxis"]["unit"] == spec.unit and panel["targets"][0]["format"] == "heatmap"
        else:
            defaults = panel["fieldConfig"]["defaults"]
            assert defaults["unit"] == spec.unit
            assert defaults.get("custom", {}).get("stacking", {"mode": "none"})["mode"] == ("normal" if spec.stacked else "none")
    variable = written["templating"]["list"][0]
    assert (variable["type"], variable["query"], variable["current"]["value"]) == ("datasource", "prometheus", DATASOURCE_UID)

    rules = rules_json(alerts(tiny))
    assert [json.loads(json.dumps(alerting.Rule.from_json(rule), cls=JSONEncoder)) for rule in rules] == rules
    uids = [rule["uid"] for rule in rules]
    assert len(set(uids)) == len(uids) and all(re.fullmatch(r"[a-z0-9-]{1,40}", uid) for uid in uids)
    # a new uid scheme would orphan every rule already pushed: keep this one
    assert rule_uid(Alert("ScrapeTargetDown", "up == 0", 120, "page", "")) == "sr-scrapetargetdown-e32bf1db"
    assert len({rule["title"] for rule in rules}) == len(rules)  # Grafana refuses two titles in one folder


def test_serving_stack_still_imports_its_own_urllib3():
    """Fails if urllib3-future was installed from its wheel: its .pth then overwrites urllib3 at every interpreter start."""
    probe = subprocess.run([sys.executable, "-c", URLLIB3_PROBE], capture_output=True, text=True, timeout=600, check=True)
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["override_pth"] == [] and not seen["fork_marker"], seen
    assert seen["version"] == seen["installed"] and seen["version"].startswith("2."), seen
    assert int(seen["version"].split(".")[-1]) < 900, seen  # urllib3-future's patch numbers are 900+, as niquests checks
    assert seen["file"].startswith(seen["ray_dir"]), seen
    assert seen["niquests_pool"].startswith("urllib3_future."), seen  # grafana-client's HTTP goes through the fork, apart
