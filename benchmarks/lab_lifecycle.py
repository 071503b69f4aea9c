#!/usr/bin/env python3
"""Time one lab's lifecycle with checkpoints: up, verify, checkpoint save, restore + verify, down; memory and disk.

Usage (root, from the repository root):
    .venv/bin/python benchmarks/lab_lifecycle.py [LAB_TEMPLATE] [--suite S ...] [--cold] [--no-warm]

Brings up a copy of labs/<LAB_TEMPLATE>.yml (default storage) with a unique name and subnets and prints, in one
run: `up` (cold: images built into an empty cache, with --cold; else the first `up` with the shared image cache),
`verify` per suite, a no-op `up`, `down` and a warm `up` (cached images; skipped with --no-warm), `checkpoint
save`, `checkpoint restore` and `verify` right after it, and the final `down` (its leak check must be clean).
Each command is timed on the wall clock; the checkpoint phases (stop, copy, start) come from stacklab's event log.
Memory per lab is the resident memory (RSS) of every process in the lab's nodes (`ps` over SSH with the lab key;
shared pages count once per process, so it is an upper bound); disk per lab is what its state directory takes on
disk (st_blocks: node upper dirs, state, keys; images are shared and not counted), and the checkpoint's own size.
Ratios: restore / first `up`, and (restore + verify) / (first `up` + verify).
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
from pathlib import Path
from typing import Any

from bench_lab import bench_lab

ROOT = Path(__file__).resolve().parents[1]
STACKLAB = [sys.executable, "-m", "stacklab"]
SUITE_LINE = re.compile(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)$")


def cli(args: list[str], env: dict[str, str], *, check: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    result = subprocess.run([*STACKLAB, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"stacklab {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return time.monotonic() - start, result


def suite_seconds(text: str) -> dict[str, tuple[int, int, float]]:
    """verify's summary table (on stderr) -> suite: (passed, failed, seconds)."""
    out = {}
    for line in text.splitlines():
        match = SUITE_LINE.match(line.strip())
        if match:
            out[match[1]] = (int(match[2]), int(match[3]), float(match[5]))
    return out


def checkpoint_phases(state: Path, lab: str, command: str) -> dict[str, float]:
    logs = sorted((state / lab / "logs").glob(f"*-{command}.jsonl"), key=lambda p: p.stat().st_mtime)
    return {
        str(e["phase"]).removeprefix("checkpoint-"): float(e["duration"])
        for e in map(json.loads, logs[-1].read_text().splitlines())
        if e["type"] == "phase_end" and str(e.get("phase", "")).startswith("checkpoint-")
    }


def lab_rss_mib(state: Path, lab: str) -> float:
    from stacklab.engine.access import NodeRunners

    resources = json.loads((state / lab / "state.json").read_text())["resources"]
    runners = NodeRunners(state / lab)
    total = 0
    try:
        for rid in resources:
            if rid.startswith("node/"):
                out = runners(rid.removeprefix("node/")).run(["ps", "-eo", "rss="], timeout=30).stdout
                total += sum(int(v) for v in out.split())
    finally:
        runners.close()
    return total / 1024


def disk_mib(path: Path, skip: tuple[str, ...] = ()) -> float:
    from stacklab.engine.checkpoint import allocated_bytes

    if not path.is_dir():
        return 0.0
    return (
        sum(
            allocated_bytes(p) if p.is_dir() else p.stat().st_blocks * 512 for p in path.iterdir() if p.name not in skip
        )
        / 2**20
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("template", nargs="?", default="storage")
    parser.add_argument("--suite", action="append", default=[], help="suites to verify (default: the lab's own)")
    parser.add_argument("--cold", action="store_true", help="build the images into an empty cache for the first up")
    parser.add_argument("--no-warm", action="store_true", help="skip the down + warm up cycle")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: labs create bridges and containers")
    lab = bench_lab(args.template, "llc")
    name, work, lab_file, state, env = lab.name, lab.work, lab.file, lab.state, lab.env
    if args.cold:  # every command of this lab then uses that cache, so the warm up finds its images there
        env["STACKLAB_IMAGE_CACHE"] = str(work / "cache")
    suites = [arg for suite in args.suite for arg in ("--suite", suite)]
    rows: list[tuple[str, float]] = []
    extra: dict[str, Any] = {}
    clean = False
    try:
        first, _ = cli(["up", "-y", str(lab_file)], env)
        rows.append(("up (cold: images built)" if args.cold else "up (first, cached images)", first))
        wall, result = cli(["verify", name, *suites], env, check=False)
        extra["verify"] = suite_seconds(result.stderr)
        extra["verify_ok"] = result.returncode == 0
        rows.append(("verify", wall))
        rows.append(("no-op up", cli(["up", "-y", str(lab_file)], env)[0]))
        if not args.no_warm:
            rows.append(("down (before the warm up)", cli(["down", name], env)[0]))
            rows.append(("up (warm, cached images)", cli(["up", "-y", str(lab_file)], env)[0]))
        extra["rss"] = lab_rss_mib(state, name)
        extra["disk"] = disk_mib(state / name, skip=("checkpoints", "logs", "verify"))
        rows.append(("checkpoint save", cli(["checkpoint", "save", name, "bench"], env)[0]))
        extra["save_phases"] = checkpoint_phases(state, name, "checkpoint-save")
        listed = json.loads(cli(["checkpoint", "list", "--json", name], env)[1].stdout)
        extra["checkpoint_mib"] = listed["checkpoints"][0]["bytes_on_disk"] / 2**20
        restore, _ = cli(["checkpoint", "restore", name, "bench"], env)
        rows.append(("checkpoint restore", restore))
        extra["restore_phases"] = checkpoint_phases(state, name, "checkpoint-restore")
        wall, result = cli(["verify", name, *suites], env, check=False)
        extra["verify_after"] = suite_seconds(result.stderr)
        extra["verify_after_ok"] = result.returncode == 0
        rows.append(("verify after restore", wall))
        extra["rss_after"] = lab_rss_mib(state, name)
        wall, result = cli(["down", name], env)
        rows.append(("down", wall))
        clean = "leak check: clean" in result.stderr
    finally:
        subprocess.run([*STACKLAB, "down", name], env=env, cwd=ROOT, check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    figures = dict(rows)
    print(f"lab {args.template} ({name}), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    for label, seconds in rows:
        print(f"  {label:<28} {seconds:8.1f} s")
    for key, title in (("verify", "verify"), ("verify_after", "verify after restore")):
        ok = "passed" if extra[f"{key}_ok"] else "FAILED"
        per_suite = ", ".join(f"{s} {p} passed {f} failed {sec:.0f} s" for s, (p, f, sec) in extra[key].items())
        print(f"  {title} ({ok}): {per_suite}")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in extra["save_phases"].items())
    print(f"  save phases: {phases}")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in extra["restore_phases"].items())
    print(f"  restore phases: {phases}")
    print(
        f"  memory (RSS in the nodes): {extra['rss']:.0f} MiB before the save, "
        f"{extra['rss_after']:.0f} MiB after the restore"
    )
    print(
        f"  disk: lab {extra['disk']:.0f} MiB (state dir, images not counted), "
        f"checkpoint {extra['checkpoint_mib']:.0f} MiB"
    )
    up_key = next(k for k in figures if k.startswith("up ("))
    up, verify = figures[up_key], figures["verify"]
    restore, after = figures["checkpoint restore"], figures["verify after restore"]
    print(
        f"  ratio restore / {up_key}: {restore / up:.2f}; "
        f"(restore + verify) / (up + verify): {(restore + after) / (up + verify):.2f}"
    )
    print(f"  leak check after down: {'clean' if clean else 'NOT clean'}")


if __name__ == "__main__":
    main()
