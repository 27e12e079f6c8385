"""Grafana provisioned from code through its HTTP API (grafana-client): the Prometheus datasource, the folder, the
"Specialist router" dashboard and the profile's alert rules. Idempotent: everything is updated in place by uid, so a
second push duplicates nothing, and rules of our group that the profile no longer has are deleted.

`python -m cluster.observe push --grafana-url http://127.0.0.1:3000 --token TOKEN [--prometheus-url URL] [--profile local]`
(the token, an Admin service-account token, may come from GRAFANA_TOKEN instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

from cluster.observe import panels
from cluster.observe.alerts import GROUP, alerts
from cluster.observe.dashboard import DATASOURCE_NAME, DATASOURCE_UID, dashboard_json, rules_json
from router.catalog import Profile, load_profile

DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"
NOT_FOUND = 404


def _update_or_create(update: Callable[[], object], create: Callable[[], object]) -> str:
    """Update by uid first, as every push after the first does; Grafana's 404 for an unknown uid means create it."""
    try:
        update()
        return "updated"
    except GrafanaClientError as error:
        if error.status_code != NOT_FOUND:
            raise
    create()
    return "created"


def _version(grafana: GrafanaApi, url: str) -> str:
    """The first authenticated call, so a bad token fails here with a message that says what to fix."""
    try:
        return grafana.version
    except GrafanaUnauthorizedError as error:
        raise PermissionError(f"Grafana at {url} refused the token ({error.response}): pass an Admin service-account "
                              "token with --token or GRAFANA_TOKEN") from error


def _ensure_datasource(grafana: GrafanaApi, prometheus_url: str) -> str:
    body = {"uid": DATASOURCE_UID, "name": DATASOURCE_NAME, "type": "prometheus", "access": "proxy", "url": prometheus_url,
            "jsonData": {"httpMethod": "POST"}}
    return _update_or_create(lambda: grafana.datasource.update_datasource_by_uid(DATASOURCE_UID, body),
                             lambda: grafana.datasource.create_datasource(body))


def _ensure_folder(grafana: GrafanaApi) -> str:
    return _update_or_create(lambda: grafana.folder.update_folder(panels.FOLDER_UID, title=panels.FOLDER_TITLE, overwrite=True),
                             lambda: grafana.folder.create_folder(panels.FOLDER_TITLE, uid=panels.FOLDER_UID))


def _ensure_dashboard(grafana: GrafanaApi) -> dict:
    saved = grafana.dashboard.update_dashboard({"dashboard": dashboard_json(), "folderUid": panels.FOLDER_UID, "overwrite": True,
                                                "message": "python -m cluster.observe push"})
    return {key: saved[key] for key in ("uid", "url", "version")}


def _ensure_rules(grafana: GrafanaApi, rules: list[dict]) -> dict[str, list[str]]:
    """Deletes first, so a rule that comes back under a new uid does not clash with its old title."""
    provisioning = grafana.alertingprovisioning
    present = {rule["uid"]: rule for rule in provisioning.get_alertrules_all()}
    wanted = {rule["uid"] for rule in rules}
    stale = [uid for uid, rule in present.items()
             if rule["folderUID"] == panels.FOLDER_UID and rule["ruleGroup"] == GROUP and uid not in wanted]
    for uid in stale:
        provisioning.delete_alertrule(uid)
    for rule in rules:
        if rule["uid"] in present:
            provisioning.update_alertrule(rule["uid"], rule)
        else:
            provisioning.create_alertrule(rule)
    return {"created": sorted(wanted - present.keys()), "updated": sorted(wanted & present.keys()), "deleted": sorted(stale)}


def push(url: str, token: str, profile: Profile, prometheus_url: str = DEFAULT_PROMETHEUS_URL) -> dict:
    """Brings the Grafana at `url` to the state this code describes; returns what it did, object by object."""
    grafana = GrafanaApi.from_url(url, credential=token)
    return {
        "grafana": _version(grafana, url),
        "datasource": _ensure_datasource(grafana, prometheus_url),
        "folder": _ensure_folder(grafana),
        "dashboard": _ensure_dashboard(grafana),
        "alert_rules": _ensure_rules(grafana, rules_json(alerts(profile))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.observe push",
                                     description="Provision Grafana with the router's datasource, dashboard and alert rules.")
    parser.add_argument("--grafana-url", required=True, help="Grafana's base URL, e.g. http://127.0.0.1:3000")
    parser.add_argument("--token", default=os.environ.get("GRAFANA_TOKEN"), help="Admin service-account token "
                        "(default: $GRAFANA_TOKEN)")
    parser.add_argument("--prometheus-url", default=DEFAULT_PROMETHEUS_URL, help="what Grafana's datasource points at")
    parser.add_argument("--profile", default="local", help="the profile whose alert thresholds and specialists to use")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("no token: pass --token or set GRAFANA_TOKEN")
    try:
        result = push(args.grafana_url, args.token, load_profile(args.profile), args.prometheus_url)
    except (PermissionError, GrafanaException) as error:
        print(f"push to {args.grafana_url} failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
