"""`python -m cluster.reliability --profile tiny --json`: the fault suite, the fuzzing and a soak against a local cluster,
as one JSON object (docs/reliability.md).

It starts the profile on this machine (LocalCluster, 127.0.0.1 only) unless `--url` names one you run (then `--config`
is the Serve config it was deployed with, for the redeploy fault). Goal: `lost` = `truncated_streams` = `server_errors`
= 0 with every fault passed and >= 1,000 bad inputs tried.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cluster.reliability import fuzz
from cluster.reliability.faults import FAULTS, Suite, run_fault
from cluster.reliability.soak import soak
from router.catalog import load_profile

TOTALS = ("accepted", "completed", "clean_errors", "lost", "truncated_streams", "server_errors", "missing_retry_after")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--url", help="a running cluster's base URL (default: start the profile here)")
    parser.add_argument("--config", type=Path, help="with --url: the Serve config it was deployed with")
    parser.add_argument("--faults", nargs="*", default=list(FAULTS), choices=list(FAULTS), metavar="FAULT",
                        help=f"which faults, in order (default: all): {', '.join(FAULTS)}")
    parser.add_argument("--soak-minutes", type=float, default=10, help="0: no soak")
    parser.add_argument("--fuzz-examples", type=int, default=400, help="schemathesis examples per route; 0: no fuzzing")
    parser.add_argument("--json", action="store_true", help="print only the JSON object (progress goes to stderr)")
    parser.add_argument("--out", type=Path, help="also write the JSON object here")
    return parser.parse_args(argv)


@contextlib.contextmanager
def cluster(ns: argparse.Namespace) -> Iterator[tuple[str, Path]]:
    if ns.url:
        if ns.config is None:
            raise SystemExit("--url needs --config (the Serve config the cluster was deployed with)")
        yield ns.url, ns.config
        return
    from cluster.local import LocalCluster

    with contextlib.redirect_stdout(sys.stderr), LocalCluster(ns.profile, ready_timeout_s=900, observe=False) as local:
        yield local.base_url, local.cache_dir / f"serve-{ns.profile}.yaml"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run(suite: Suite, ns: argparse.Namespace) -> dict[str, Any]:
    faults = []
    for name in ns.faults:
        say(f"fault {name} ...")
        result = await run_fault(suite, name)
        say(f"fault {name}: {'passed' if result.passed else 'FAILED'} (recovery {result.recovery_s} s) {result.checks}")
        faults.append(result)
    fuzzed = {"bad_inputs_tried": 0, "server_errors": 0, "failures": []}
    if ns.fuzz_examples:
        say("fuzzing ...")
        fuzzed = await asyncio.to_thread(fuzz.run_all, suite.base_url, ns.fuzz_examples)
        say(f"fuzzing: {fuzzed['bad_inputs_tried']} inputs, {fuzzed['server_errors']} server errors")
    soaked = None
    if ns.soak_minutes:
        say(f"soak {ns.soak_minutes:g} min ...")
        soaked = await soak(suite, ns.soak_minutes)
        say(f"soak: {json.dumps({k: soaked[k] for k in ('accepted', 'lost', 'server_errors', 'rss_growth_mb')})}")
    totals = suite.ledger.summary()
    return {
        **{key: totals[key] for key in TOTALS},
        "server_errors": totals["server_errors"] + fuzzed["server_errors"],
        "bad_inputs_tried": fuzzed["bad_inputs_tried"],
        "faults": [f.row() for f in faults],
        "rss_growth_mb": soaked["rss_growth_mb"] if soaked else None,
        "profile": ns.profile, "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
        "details": {"faults": [vars(f) for f in faults], "fuzz": fuzzed, "soak": soaked,
                    "failure_examples": totals["failure_examples"], "statuses": totals["statuses"]},
    }


def _commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> None:
    ns = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would bury the progress
    with cluster(ns) as (url, config):
        report = asyncio.run(run(Suite(url, load_profile(ns.profile), config), ns))
    text = json.dumps(report, indent=None if ns.json else 2)
    if ns.out:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps(report, indent=2) + "\n")
    print(text)
    passed = report["lost"] == report["truncated_streams"] == report["server_errors"] == 0 and all(
        f["passed"] for f in report["faults"])
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
