"""Where each engine replica's cold start went, read from a Ray session's logs: the scale-up goal is "serving
within the engine's cold start + 15 s", and this says which phase to cut.

    python -m cluster.bench.replica_starts [--logs /tmp/ray/session_latest/logs] [--deployment smollm2-135m] [--json]

One row per `LLMServer` replica the Serve controller started, with the seconds spent in each phase:
  process   -- the controller starting the replica until its actor process logs (Ray worker launch + imports);
  vllm_import -- until the replica has imported ray.serve.llm/vLLM and built the engine config;
  engine_core -- until vLLM's EngineCore process, spawned afresh, has imported vLLM again and starts;
  worker    -- until its model-runner Worker process, spawned afresh, has imported vLLM a third time;
  weights   -- loading the weights; kv_warmup -- profiling, KV-cache allocation and warm-up;
  handshake -- until the replica reports the engine started; healthy -- until the controller counts it running.
vLLM on CPU spawns (never forks) both processes (vllm/platforms/cpu.py), so a replica imports torch + vLLM
three times; on 2 busy cores those imports are most of a scale-up's wait.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

SERVE_TIME = re.compile(r"^\w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
VLLM_TIME = re.compile(r"^\((?:EngineCore|Worker)[^)]*\) \w+ (\d\d-\d\d \d\d:\d\d:\d\d) ")
STARTING = re.compile(r"Starting Replica\(id='(\w+)', deployment='LLMServer:([^']+)'")
STARTED = re.compile(r"Replica\(id='(\w+)', deployment='LLMServer:[^']+'.*\) started successfully")
# (phase, marker that ends it, which log it is in: Serve's replica log, the replica actor's stderr, or its stdout
# where vLLM's child processes print)
MARKERS = (
    ("process", "Started initializing replica", "replica"),
    ("vllm_import", "Using executor class", "err"),
    ("engine_core", "Initializing a V1 LLM engine", "out"),
    ("worker", "Starting to load model", "out"),
    ("weights", "Loading weights took", "out"),
    ("kv_warmup", "init engine (profile, create kv cache, warmup model) took", "out"),
    ("handshake", "Started vLLM engine", "err"),
)
PHASES = [phase for phase, _, _ in MARKERS] + ["healthy"]


def serve_time(line: str) -> datetime | None:
    match = SERVE_TIME.match(line)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f") if match else None


def vllm_time(line: str, year: int) -> datetime | None:
    """vLLM's child processes log to the second and without the year."""
    match = VLLM_TIME.match(line)
    return datetime.strptime(f"{year}-{match.group(1)}", "%Y-%m-%d %H:%M:%S") if match else None


def controller_events(logs: Path) -> tuple[dict[str, tuple[str, datetime]], dict[str, datetime]]:
    """Replica id -> (specialist, when the controller started it), and replica id -> when it was running."""
    starting, started = {}, {}
    for path in sorted((logs / "serve").glob("controller_[0-9]*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if (at := serve_time(line)) is None:
                continue
            if match := STARTING.search(line):
                starting[match.group(1)] = (match.group(2), at)
            elif match := STARTED.search(line):
                started[match.group(1)] = at
    return starting, started


def replica_logs(logs: Path, replica_id: str) -> dict[str, list[str]]:
    """Serve's replica log, the replica actor's stderr (Serve's lines name the replica id) and its stdout."""
    found = {"replica": [line for path in (logs / "serve").glob(f"replica_*_{replica_id}.log")
                         for line in path.read_text(errors="replace").splitlines()], "err": [], "out": []}
    needle = f" {replica_id} -- "
    for err in logs.glob("worker-*.err"):
        text = err.read_text(errors="replace")
        if needle in text:
            out = err.with_suffix(".out")
            found["err"], found["out"] = text.splitlines(), out.read_text(errors="replace").splitlines() if out.exists() else []
            break
    return found


def phases(logs: Path) -> list[dict]:
    """Per replica: specialist, seconds in each phase reached so far, and the total until the controller saw it."""
    starting, started = controller_events(logs)
    rows = []
    for replica_id, (specialist, begin) in sorted(starting.items(), key=lambda item: item[1][1]):
        lines_in = replica_logs(logs, replica_id)
        previous, row = begin, {"replica": replica_id, "specialist": specialist, "started_at": begin.isoformat(timespec="seconds")}
        for phase, marker, source in MARKERS:
            stamp = (lambda line: vllm_time(line, begin.year)) if source == "out" else serve_time
            at = next((t for line in lines_in[source] if marker in line and (t := stamp(line))), None)
            if at is None:
                break
            row[phase], previous = round((at - previous).total_seconds(), 1), at
        if replica_id in started:
            row["healthy"] = round((started[replica_id] - previous).total_seconds(), 1) if "handshake" in row else None
            row["total"] = round((started[replica_id] - begin).total_seconds(), 1)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.replica_starts", description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=Path, default=Path("/tmp/ray/session_latest/logs"))
    parser.add_argument("--deployment", help="only this specialist's replicas")
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    args = parser.parse_args(argv)
    if not (args.logs / "serve").is_dir():
        parser.error(f"{args.logs} is not a Ray session's logs folder (no serve/ inside)")
    rows = [r for r in phases(args.logs) if args.deployment in (None, r["specialist"])]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'specialist':18} {'replica':9} {'started':20} " + " ".join(f"{p:>11}" for p in PHASES) + f" {'total':>7}")
    for row in rows:
        cells = " ".join(f"{row[p]:>11}" if row.get(p) is not None else f"{'-':>11}" for p in PHASES)
        print(f"{row['specialist']:18} {row['replica']:9} {row['started_at']:20} {cells} {row.get('total', '-'):>7}")


if __name__ == "__main__":
    main()
