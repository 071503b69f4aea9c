#!/usr/bin/env python3
"""Time the lab lifecycle from stacklab's own event logs: image build, nodes to SSH-ready, no-op up, down.

Usage (root): .venv/bin/python benchmarks/lab_timings.py [--nodes 3] [--cold]
--cold builds the base image into an empty temporary cache first (minutes); without it the shared cache is used.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACKLAB = [sys.executable, "-m", "stacklab"]


def lab_text(name: str, nodes: int, octet: int) -> str:
    lines = [
        f"name: {name}",
        "networks:",
        f"  mgmt: {{bridge: br-mgmt, cidr: 10.{octet}.10.0/24}}",
        f"  storage: {{bridge: br-storage, cidr: 10.{octet}.20.0/24}}",
        "images:",
        "  base: {recipe: debian-12-base}",
        "nodes:",
    ]
    lines += [f"  n{i}: {{kind: container, image: base, nics: [mgmt, storage]}}" for i in range(1, nodes + 1)]
    return "\n".join(lines) + "\n"


def run(args: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run([*STACKLAB, *args], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def events(state: Path, lab: str, command: str) -> list[dict[str, object]]:
    logs = sorted((state / lab / "logs").glob(f"*-{command}.jsonl"), key=lambda p: p.stat().st_mtime)
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


def step(evts: list[dict[str, object]], prefix: str) -> list[float]:
    return [
        float(e["duration"])  # type: ignore[arg-type]
        for e in evts
        if e["type"] == "step_end" and str(e.get("resource", "")).startswith(prefix) and e.get("outcome") == "ok"
    ]


def phase(evts: list[dict[str, object]], name: str) -> float:
    return sum(float(str(e["duration"])) for e in evts if e["type"] == "phase_end" and e["phase"] == name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also time a cold image build into an empty cache")
    args = parser.parse_args()
    name = f"bench-{secrets.token_hex(2)}"
    octet = 200 + secrets.randbelow(40)
    work = Path(tempfile.mkdtemp(prefix="stacklab-bench-"))
    lab_file = ROOT / ".stacklab" / f"{name}.yml"
    lab_file.parent.mkdir(exist_ok=True)
    lab_file.write_text(lab_text(name, args.nodes, octet))
    state = work / "state"
    env = {**os.environ, "STACKLAB_STATE": str(state)}
    if args.cold:
        env["STACKLAB_IMAGE_CACHE"] = str(work / "cache")
    figures: list[tuple[str, float]] = []
    try:
        wall = run(["up", "-y", str(lab_file)], env)
        first = events(state, name, "up")
        image = step(first, "image/")
        label = "image build (cold, empty cache)" if args.cold else "image step (shared cache)"
        figures.append((label, max(image) if image else 0.0))
        nodes = step(first, "node/")
        figures.append((f"{args.nodes} container nodes to SSH-ready (apply phase, parallel)", phase(first, "apply")))
        figures.append(("slowest node to SSH-ready", max(nodes) if nodes else 0.0))
        figures.append(("first up, wall clock", wall))
        figures.append(("down (after first up)", run(["down", name], env)))
        wall = run(["up", "-y", str(lab_file)], env)
        second = events(state, name, "up")
        cached = step(second, "image/")
        figures.append(("image step on re-up (cached)", max(cached) if cached else 0.0))
        figures.append(("up with a cached image, wall clock", wall))
        figures.append(("no-op up, wall clock", run(["up", "-y", str(lab_file)], env)))
        figures.append(("down, wall clock", run(["down", name], env)))
    finally:
        subprocess.run([*STACKLAB, "down", name], env=env, cwd=ROOT, check=False, capture_output=True)
        lab_file.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(k) for k, _ in figures)
    print(f"stacklab lab timings ({args.nodes} nodes, lab {name}, {os.cpu_count()} CPUs)")
    for key, value in figures:
        print(f"  {key.ljust(width)}  {value:8.2f} s")


if __name__ == "__main__":
    main()
