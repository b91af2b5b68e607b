"""Serve application status: print it, or wait until every deployment is healthy.

    python -m operators.serve_status [--wait --timeout 300] [--app callqc] [--json]

Connects to the cluster in RAY_ADDRESS. Exit 0 when the application is RUNNING, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import ray
from ray import serve


def application_status(app: str) -> dict:
    status = serve.status()
    details = status.applications.get(app)
    if details is None:
        return {"app": app, "status": "NOT_DEPLOYED", "message": "", "deployments": {}}
    return {
        "app": app,
        "status": str(details.status.value if hasattr(details.status, "value") else details.status),
        "message": details.message,
        "deployments": {
            name: {
                "status": str(d.status.value if hasattr(d.status, "value") else d.status),
                "replicas": dict(d.replica_states),
                "message": d.message,
            }
            for name, d in details.deployments.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--app", default="callqc")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), logging_level="ERROR", log_to_driver=False)
    deadline = time.monotonic() + args.timeout
    while True:
        info = application_status(args.app)
        if info["status"] == "RUNNING" or not args.wait:
            break
        if info["status"] in ("DEPLOY_FAILED", "UNHEALTHY"):
            print(json.dumps(info, indent=2, default=str), file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(f"timed out after {args.timeout:.0f}s: {json.dumps(info, default=str)}", file=sys.stderr)
            return 1
        time.sleep(1.0)
    print(json.dumps(info, indent=2, default=str) if args.json else f"{args.app}: {info['status']}")
    for name, dep in info["deployments"].items():
        if not args.json:
            print(f"  {name:14s} {dep['status']:10s} {dep['replicas']}")
    return 0 if info["status"] == "RUNNING" else 1


if __name__ == "__main__":
    sys.exit(main())
