"""The alert rules as Prometheus loads them: `promtool check rules` on every profile's rule file, and `promtool test
rules` on the tiny profile's: each alert fires on the series it is meant for and stays quiet beside them."""

import shutil
from pathlib import Path

import pytest
import yaml

from cluster.observe.alerts import alerts
from cluster.observe.rules import duration, write_rules
from cluster.observe.servers import promtool
from router.catalog import load_catalog, load_profile

HERE = Path(__file__).parent
RULE_TESTS = ("observe_rules_test.yml", "observe_rules_judge_test.yml")  # the judge's 7-day window evaluates apart


@pytest.mark.parametrize("profile", sorted(load_catalog().profiles))
def test_promtool_accepts_the_rules_of_every_profile(profile: str, tmp_path: Path) -> None:
    rules = write_rules(load_profile(profile), tmp_path / "rules.yml")
    checked = promtool(["check", "rules", str(rules)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts(load_profile(profile)))} rules found" in checked.stdout


def test_every_tiny_alert_fires_and_stays_quiet_as_intended(tmp_path: Path) -> None:
    write_rules(load_profile("tiny"), tmp_path / "rules.yml")
    copies = [shutil.copy(HERE / name, tmp_path / name) for name in RULE_TESTS]  # their rule_files: rules.yml beside them
    tested = promtool(["test", "rules", *map(str, copies)])
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rule_tests_cover_every_alert() -> None:
    """A new alert in alerts.py needs a case here that shows it firing."""
    fired = {alert["exp_labels"].get("alertname", case["alertname"])
             for name in RULE_TESTS for test in yaml.safe_load((HERE / name).read_text())["tests"]
             for case in test["alert_rule_test"] for alert in case.get("exp_alerts", [])}
    assert fired == {alert.name for alert in alerts(load_profile("tiny"))}


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (90, "90s"), (120, "2m"), (1800, "30m"), (7200, "2h")])
def test_durations_read_as_people_write_them(seconds: int, text: str) -> None:
    assert duration(seconds) == text
