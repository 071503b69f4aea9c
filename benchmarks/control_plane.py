#!/usr/bin/env python3
"""Time and size the OpenStack control plane: each service's `up` and `down` step, and the memory of its daemons.

Usage (root, from the repository root): .venv/bin/python benchmarks/control_plane.py [LAB_TEMPLATE]

Brings up a copy of labs/<LAB_TEMPLATE>.yml (default control-plane) with a unique name and subnets, reads every
`service/*` step of that `up` from stacklab's event log, sums the resident memory (RSS) of each service's daemons
on its nodes (`ps` over SSH with the lab key), times a no-op `up`, then `down` (which must report a clean leak
check) and its service steps. Images must be cached for the figures to mean the services (a first run builds them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench_lab import bench_lab

ROOT = Path(__file__).resolve().parents[1]
STACKLAB = [sys.executable, "-m", "stacklab"]
# a process's "comm args" -> the service it belongs to, first match wins (keystone, cinder-api and placement are
# all uwsgi_python3: their --wsgi-file tells them apart)
DAEMONS = [
    (r"keystone-wsgi-public", "keystone"),
    (r"placement-api", "placement"),
    (r"cinder-(wsgi|api|scheduler|volume)", "cinder"),
    (r"glance-api", "glance"),
    (r"\bswift-|\brsync\b", "swift"),
    (r"\bmariadbd\b", "mariadb"),
    (r"\bbeam\.smp\b|\bepmd\b", "rabbitmq"),
    (r"\bmemcached\b", "memcached"),
    (r"\bceph-(mon|mgr|osd)\b", "ceph"),
]


def cli(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.monotonic()
    result = subprocess.run([*STACKLAB, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"stacklab {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - start, result.stderr


def service_steps(state: Path, lab: str, command: str) -> dict[str, float]:
    logs = sorted((state / lab / "logs").glob(f"*-{command}.jsonl"), key=lambda p: p.stat().st_mtime)
    return {
        str(e["resource"]).removeprefix("service/"): float(e["duration"])
        for e in map(json.loads, logs[-1].read_text().splitlines())
        if e["type"] == "step_end" and str(e.get("resource", "")).startswith("service/")
    }


def daemon_rss(state: Path, lab: str) -> dict[str, float]:
    """MiB of resident memory per service, summed over every node of the lab."""
    from stacklab.engine.access import NodeRunners

    lab_state = json.loads((state / lab / "state.json").read_text())["resources"]
    nodes = [rid.removeprefix("node/") for rid in lab_state if rid.startswith("node/")]
    runners = NodeRunners(state / lab)
    totals: dict[str, float] = defaultdict(float)
    try:
        for node in nodes:
            out = runners(node).run(["ps", "-eo", "rss=,comm=,args="], timeout=30).stdout
            for line in out.splitlines():
                rss, comm, args = [*line.split(None, 2), "", ""][:3]
                service = next((name for pattern, name in DAEMONS if re.search(pattern, f"{comm} {args}")), None)
                if service:
                    totals[service] += int(rss) / 1024
    finally:
        runners.close()
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("template", nargs="?", default="control-plane")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: labs create bridges and containers")
    lab = bench_lab(args.template, "cpb")
    name, work, lab_file, state, env = lab.name, lab.work, lab.file, lab.state, lab.env
    results: dict[str, Any] = {}
    try:
        results["up"], _ = cli(["up", "-y", str(lab_file)], env)
        results["up_steps"] = service_steps(state, name, "up")
        results["rss"] = daemon_rss(state, name)
        results["noop"], _ = cli(["up", "-y", str(lab_file)], env)
    finally:
        wall, stderr = cli(["down", name], env)
        results["down"] = wall
        results["down_steps"] = service_steps(state, name, "down")
        clean = "leak check: clean" in stderr
        shutil.rmtree(work, ignore_errors=True)
    print(f"lab {args.template} ({name}): `up` {results['up']:.1f} s, no-op `up` {results['noop']:.1f} s, "
          f"`down` {results['down']:.1f} s (leak check {'clean' if clean else 'NOT clean'})")  # fmt: skip
    print(f"{'service':<10} {'up step s':>10} {'down step s':>12} {'RSS MiB':>9}")
    for service in sorted(results["up_steps"]):
        print(
            f"{service:<10} {results['up_steps'][service]:>10.1f} {results['down_steps'].get(service, 0.0):>12.1f} "
            f"{results['rss'].get(service, 0.0):>9.0f}"
        )
    print(f"{'total':<10} {'':>10} {'':>12} {sum(results['rss'].values()):>9.0f}")


if __name__ == "__main__":
    main()
