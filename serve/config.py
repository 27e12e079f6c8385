"""Write the Serve config file equivalent to `build_app`, for `serve deploy` / `serve run` / KubeRay's RayService."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from serve.app import AppArgs
from serve.autoscaling import POLICY_FUNCTION

APP_NAME = "specialists"
IMPORT_PATH = "serve.app:build_app"


def serve_config(args: AppArgs, *, host: str = "127.0.0.1", port: int = 8000, working_dir: str | None = None) -> dict[str, Any]:
    """One application at `/`; the project must be importable on the cluster (installed, or via working_dir).

    Its autoscaling policy is set at app level so that a redeploy keeps autoscaling (serve/autoscaling.py)."""
    app: dict[str, Any] = {
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": IMPORT_PATH,
        "args": args.model_dump(exclude_none=True),
        "autoscaling_policy": {"policy_function": POLICY_FUNCTION},
    }
    if working_dir:
        app["runtime_env"] = {"working_dir": working_dir}
    return {"proxy_location": "HeadOnly", "http_options": {"host": host, "port": port}, "applications": [app]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve.config", description=__doc__)
    parser.add_argument("--profile", default="local")
    parser.add_argument("--catalog", help="models.yaml path as seen by the cluster")
    parser.add_argument("--cache-dir", help="prepared-weights folder as seen by the cluster")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--observability", help='JSON overriding the profile\'s `observability`, e.g. \'{"judge_sample_rate": 0.1}\'')
    parser.add_argument("--working-dir", help="runtime_env working_dir, e.g. local:///abs/path or a zip URL")
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    ns = parser.parse_args(argv)
    fields = {"profile": ns.profile, "catalog": ns.catalog, "cache_dir": ns.cache_dir,
              "observability": json.loads(ns.observability) if ns.observability else None}
    args = AppArgs.model_validate({k: v for k, v in fields.items() if v is not None})
    text = yaml.safe_dump(serve_config(args, host=ns.host, port=ns.port, working_dir=ns.working_dir), sort_keys=False)
    if ns.output:
        ns.output.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
