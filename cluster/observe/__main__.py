"""`python -m cluster.observe <command>`: the observability tools (docs/observability.md).

  servers    Prometheus + Alertmanager beside a running local Ray cluster (`make run` starts them itself)
  rules      write the profile's Prometheus alert-rule file
  dashboard  write the Grafana dashboard JSON, for a hand import
  push       provision a Grafana: datasource, folder, dashboard, alert rules (idempotent)
  render     draw the dashboard's panels as PNGs from a Prometheus, where no Grafana runs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router.catalog import load_profile


def _rules(argv: list[str]) -> None:
    from cluster.observe.rules import write_rules

    parser = argparse.ArgumentParser(prog="python -m cluster.observe rules")
    parser.add_argument("--profile", default="local")
    parser.add_argument("--out", type=Path, required=True)
    ns = parser.parse_args(argv)
    print(write_rules(load_profile(ns.profile), ns.out))


def _dashboard(argv: list[str]) -> None:
    from cluster.observe.dashboard import write_dashboard

    parser = argparse.ArgumentParser(prog="python -m cluster.observe dashboard")
    parser.add_argument("--out", type=Path, required=True)
    print(write_dashboard(parser.parse_args(argv).out))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"servers": "cluster.observe.servers", "push": "cluster.observe.push", "render": "cluster.observe.render"}
    if not argv or argv[0] not in {*commands, "rules", "dashboard"}:
        sys.exit(__doc__)
    command, rest = argv[0], argv[1:]
    if command == "rules":
        _rules(rest)
    elif command == "dashboard":
        _dashboard(rest)
    else:
        module = __import__(commands[command], fromlist=["main"])
        sys.exit(module.main(rest) or 0)


if __name__ == "__main__":
    main()
