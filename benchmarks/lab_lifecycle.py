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

With `--copies N` it times training copies instead (engine/copies.py): the first `up`, `up --copies N` (the
checkpoint `copies` saved, then N-1 copies made from it, each in its own netns: the time per copy and its phases
from the copy's record), `reset` of copy 2 while the others run (the original's container init PIDs must be the
same after it), `verify` of copy 2 after its reset (with --verify-copy), and `down` of all. Memory per copy is
measured two ways: the host's MemAvailable before and after the copies, divided by their number (what a copy
really costs the host, page cache included), and the RSS of every process in the copy's nodes (over SSH from
inside its netns); disk per copy is what its state dir takes on disk (st_blocks; reflinks would count in full).
The lab's subnets are moved to 10.243.x.0/24 (`--subnet-octet` for another second octet).

With `--noop-down R` it times only the lab's first `up`, R no-op `up`s and its `down` (issue 17's no-op `up` <= 5 s
and `down` <= 30 s), each with the host's load average, and breaks them down from the event log: a no-op `up`'s
observe phase and its slowest resources (`observed` events), `down`'s delete steps and its leak check.
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


SCHEMA_STEP = re.compile(r"(db sync|upgrade heads|api_db sync, cells, db sync|database, fernet keys)")


def schema_steps(log: Path) -> dict[str, tuple[str, float]]:
    """One `up`'s schema steps from its event log: service -> (how: `sync` or `seed`, seconds from the step's
    progress line to the last of db_seed's lines that follow it: `... from the seed` after a load, `... kept` after
    a sync and its dump). Keystone's step line comes before its database is made, nova's covers api_db, the cell
    commands and db (the same work in both cases)."""
    events = [json.loads(line) for line in log.read_text().splitlines()]
    out: dict[str, tuple[str, float]] = {}
    for i, event in enumerate(events):
        rid, message = str(event.get("resource", "")), str(event.get("message", ""))
        if event.get("type") != "step_progress" or not rid.startswith("service/") or not SCHEMA_STEP.search(message):
            continue
        if rid in out or "seed" in message:
            continue
        mine = [e for e in events[i + 1 :] if e.get("resource") == rid]
        seeded = [e for e in mine[: next((k for k, e in enumerate(mine) if "seed" not in str(e.get("message"))),
                                          len(mine))]]  # fmt: skip
        if seeded:
            how = "seed" if any("from the seed" in str(e.get("message")) for e in seeded) else "sync"
            out[rid] = (how, round(float(seeded[-1]["ts"]) - float(event["ts"]), 1))
        elif mine:  # an `up` before db_seed: up to the service's next event
            out[rid] = ("sync", round(float(mine[0]["ts"]) - float(event["ts"]), 1))
    return out


def print_schema_steps(state: Path, lab: str) -> None:
    for log in sorted((state / lab / "logs").glob("*-up.jsonl")):
        steps = schema_steps(log)
        if steps:
            total = sum(s for _, s in steps.values())
            line = ", ".join(f"{rid.removeprefix('service/')} {how} {s:.0f} s" for rid, (how, s) in steps.items())
            print(f"  schema steps of {log.name}: {line} (sum {total:.0f} s)")


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


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no MemAvailable in /proc/meminfo")


def copy_rss_mib(state: Path, lab: str, index: int) -> float:
    """RSS in copy `index`'s nodes, asked over SSH from inside its netns."""
    from stacklab.engine.copies import CopyPlace
    from stacklab.host import netns

    place = CopyPlace(state, lab, index)
    with netns.entered(place.netns):
        return lab_rss_mib(place.root, lab)


def node_pids(env: dict[str, str], lab: str) -> dict[str, Any]:
    status = json.loads(cli(["status", "--json", lab], env)[1].stdout)
    return {r["id"]: (r.get("facts") or {}).get("pid") for r in status["resources"] if r["id"].startswith("node/")}


def move_subnets(lab_file: Path, octet: int) -> None:
    """The bench lab's /24s moved to 10.<octet>.<random>.0/24 (fixed addresses move with them)."""
    import secrets

    text = lab_file.read_text()
    prefixes = sorted(set(re.findall(r"\b(10\.\d+\.\d+\.)0/24", text)))
    thirds = secrets.SystemRandom().sample(range(30, 250), len(prefixes))
    for prefix, third in zip(prefixes, thirds, strict=True):
        text = text.replace(prefix, f"10.{octet}.{third}.")
    lab_file.write_text(text)


def copies_flow(args: argparse.Namespace) -> None:
    """`--copies N`: up, up --copies N, reset of copy 2 while the others run, verify of it, down; per-copy costs."""
    from stacklab.engine.copies import CopyPlace, CopyRecord

    lab = bench_lab(args.template, "cpb")
    name, work, lab_file, state, env = lab.name, lab.work, lab.file, lab.state, lab.env
    move_subnets(lab_file, args.subnet_octet)
    rows: list[tuple[str, float]] = []
    extra: dict[str, Any] = {}
    clean = False
    try:
        rows.append(("up (first, cached images)", cli(["up", "-y", str(lab_file)], env)[0]))
        extra["rss"] = lab_rss_mib(state, name)
        extra["disk"] = disk_mib(state / name, skip=("checkpoints", "logs", "verify", "copies"))
        before = mem_available_mib()
        wall, _ = cli(["up", "-y", str(lab_file), "--copies", str(args.copies)], env)
        rows.append((f"up --copies {args.copies} (save + {args.copies - 1} copies)", wall))
        extra["mem_per_copy"] = (before - mem_available_mib()) / (args.copies - 1)
        extra["save_phases"] = checkpoint_phases(state, name, "copies-checkpoint")
        extra["copies"] = {}
        for index in range(2, args.copies + 1):
            place = CopyPlace(state, name, index)
            extra["copies"][index] = {
                "seconds": CopyRecord.load(place).seconds,
                "rss": copy_rss_mib(state, name, index),
                "disk": disk_mib(place.lab_dir, skip=("logs", "verify")),
            }
        pids = node_pids(env, name)
        wall, result = cli(["reset", f"{name}#2"], env)
        rows.append(("reset of copy 2 (others running)", wall))
        extra["reset_line"] = result.stderr.strip().splitlines()[-1]
        extra["untouched"] = node_pids(env, name) == pids
        if args.verify_copy:
            wall, result = cli(
                ["verify", f"{name}#2", *[a for s in args.suite for a in ("--suite", s)]], env, check=False
            )
            rows.append(("verify of copy 2 after reset", wall))
            extra["verify_after"] = suite_seconds(result.stderr)
            extra["verify_after_ok"] = result.returncode == 0
        wall, result = cli(["down", name], env)
        rows.append((f"down (lab and {args.copies - 1} copies)", wall))
        clean = result.stderr.count("leak check: clean") == args.copies
    finally:
        subprocess.run([*STACKLAB, "down", name], env=env, cwd=ROOT, check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"lab {args.template} ({name}), {args.copies} copies, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    for label, seconds in rows:
        print(f"  {label:<40} {seconds:8.1f} s")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in extra["save_phases"].items())
    print(f"  checkpoint save phases: {phases}")
    for index, copy in extra["copies"].items():
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in copy["seconds"].items())
        print(f"  copy {index}: {phases}; RSS in its nodes {copy['rss']:.0f} MiB; disk {copy['disk']:.0f} MiB")
    print(f"  {extra['reset_line']}")
    print(f"  original untouched by the reset (same init PIDs): {'yes' if extra['untouched'] else 'NO'}")
    if "verify_after" in extra:
        ok = "passed" if extra["verify_after_ok"] else "FAILED"
        per_suite = ", ".join(
            f"{s} {p} passed {f} failed {sec:.0f} s" for s, (p, f, sec) in extra["verify_after"].items()
        )
        print(f"  verify of copy 2 after reset ({ok}): {per_suite}")
    print(
        f"  memory per copy: {extra['mem_per_copy']:.0f} MiB of host MemAvailable; the original's nodes RSS "
        f"{extra['rss']:.0f} MiB; disk: the original {extra['disk']:.0f} MiB (images shared, not counted)"
    )
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    rss = max(copy["rss"] for copy in extra["copies"].values())
    print(
        f"  host memory {total / 1024:.1f} GiB: by memory alone {total / max(extra['mem_per_copy'], 1):.0f} copies "
        f"(MemAvailable per copy; shared image pages count once) to {total / max(rss, 1):.0f} (RSS, shared pages "
        "counted in every process)"
    )
    print(f"  leak check after down: {'clean' if clean else 'NOT clean'} (lab and every copy)")


def last_log(state: Path, lab: str, command: str) -> list[dict[str, Any]]:
    logs = sorted((state / lab / "logs").glob(f"*-{command}.jsonl"))
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


def phase_seconds(events: list[dict[str, Any]]) -> dict[str, float]:
    return {str(e["phase"]): float(e["duration"]) for e in events if e["type"] == "phase_end"}


def noop_down_flow(args: argparse.Namespace) -> None:
    """`--noop-down R`: the first `up`, R no-op `up`s and `down`, each timed with the load; their phases."""
    lab = bench_lab(args.template, "nod")
    name, work, lab_file, state, env = lab.name, lab.work, lab.file, lab.state, lab.env
    rows: list[tuple[str, float, float]] = []  # label, seconds, load average (1 min) when it ended
    details: list[str] = []
    clean = False
    try:
        rows.append(("up (first, cached images)", cli(["up", "-y", str(lab_file)], env)[0], os.getloadavg()[0]))
        for index in range(1, args.noop_down + 1):
            wall, result = cli(["up", "-y", str(lab_file)], env)
            if "nothing to do" not in result.stderr:
                raise SystemExit(f"no-op up {index} planned changes:\n{result.stderr[-3000:]}")
            rows.append((f"no-op up {index}", wall, os.getloadavg()[0]))
            events = last_log(state, name, "up")
            slowest = sorted((e for e in events if e["type"] == "observed"), key=lambda e: -float(e["duration"]))
            observed = ", ".join(f"{e['resource']} {float(e['duration']):.1f} s" for e in slowest[:3])
            details.append(
                f"no-op up {index}: observe {phase_seconds(events).get('observe', 0.0):.1f} s; slowest: "
                f"{observed or 'no observed events'}"
            )
        wall, result = cli(["down", name], env)
        rows.append(("down", wall, os.getloadavg()[0]))
        clean = "leak check: clean" in result.stderr
        events = last_log(state, name, "down")
        steps = ", ".join(f"{e['resource']} {float(e['duration']):.1f} s" for e in events if e["type"] == "step_end")
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in phase_seconds(events).items())
        details.append(f"down: {phases}; steps: {steps}")
    finally:
        subprocess.run([*STACKLAB, "down", name], env=env, cwd=ROOT, check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"lab {args.template} ({name}), {os.cpu_count()} CPUs")
    for label, seconds, load in rows:
        print(f"  {label:<28} {seconds:8.1f} s   (load average {load:.1f})")
    for line in details:
        print(f"  {line}")
    print(f"  leak check after down: {'clean' if clean else 'NOT clean'}")


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
    parser.add_argument("--copies", type=int, default=0, help="time N training copies instead (N >= 2)")
    parser.add_argument("--verify-copy", action="store_true", help="with --copies: verify copy 2 after its reset")
    parser.add_argument("--subnet-octet", type=int, default=243, help="with --copies: the subnets' second octet")
    parser.add_argument("--schema-steps", metavar="STATE_DIR/LAB", help="only print each `up` log's schema steps")
    parser.add_argument(
        "--noop-down", type=int, default=0, metavar="R", help="time only the first up, R no-op ups and down"
    )
    args = parser.parse_args()
    if args.schema_steps:
        print_schema_steps(Path(args.schema_steps).parent, Path(args.schema_steps).name)
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: labs create bridges and containers")
    if args.noop_down:
        noop_down_flow(args)
        return
    if args.copies:
        if args.copies < 2:
            raise SystemExit("--copies: give 2 or more")
        copies_flow(args)
        return
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
    print_schema_steps(state, name)  # the first `up` migrates (or loads seeds another lab kept), the warm one loads


if __name__ == "__main__":
    main()
