#!/usr/bin/env python3
"""Time from `stacklab up` to SSH-ready (lab key answers and cloud-init done) for 1 and 3 VM nodes, beside kcli.

Usage (root, from the repository root):  .venv/bin/python benchmarks/vm_ssh_ready.py [--vms 1,3] [--cpus 1]

For each count a lab with that many VM nodes (1 GiB each, on br-mgmt and br-storage, unique name and subnets)
is brought up with the real CLI (`stacklab up -y`), timed from the start of the command, and taken down again
(`down` must report a clean leak check). Figures come from stacklab's own JSONL event log of that `up`:
"ready" is each node step's end relative to the run's start (the node step ends once SSH answers with the lab
key and `cloud-init status --wait` is done), "wall" the whole command. The image must be cached (a first `up` of
any lab using debian-12-base builds it); the VM base disk is built on the first VM `up` and reused.

kcli (`pip install kcli`, module `kvirt`): its installed libvirt provider is inspected, and the benchmark says
exactly why it cannot do the same work here (then it prints no kcli time and no ratio) or, if those reasons no
longer hold, that the comparison must be extended.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STACKLAB = [sys.executable, "-m", "stacklab"]
# QEMU runs as libvirt-qemu and must search every directory above its disks: not under a 0700 tmp dir.
STATE_BASE = Path("/var/tmp/stacklab-bench-vm")


def lab_text(name: str, count: int, cpus: int, octet: int, third: int) -> str:
    lines = [
        f"name: {name}",
        "networks:",
        f"  mgmt: {{bridge: br-mgmt, cidr: 10.{octet}.{third}.0/24}}",
        f"  storage: {{bridge: br-storage, cidr: 10.{octet + 40}.{third}.0/24}}",
        "images:",
        "  base: {recipe: debian-12-base}",
        "nodes:",
    ]
    lines += [
        f"  vm{i}: {{kind: vm, image: base, cpus: {cpus}, memory: 1GiB, nics: [mgmt, storage]}}"
        for i in range(1, count + 1)
    ]
    return "\n".join(lines) + "\n"


def cli(args: list[str], env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACKLAB, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def events(state: Path, lab: str, command: str) -> list[dict[str, Any]]:
    logs = sorted((state / lab / "logs").glob(f"*-{command}.jsonl"), key=lambda p: p.stat().st_mtime)
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


def run(count: int, cpus: int) -> dict[str, Any]:
    """One lab of `count` VMs: up (timed), down (leak-checked); the figures of that up."""
    token = secrets.token_hex(2)
    name = f"vmb-{token}"
    work = Path(tempfile.mkdtemp(prefix="stacklab-vm-bench-"))
    for linked in ("images", "cloud-init"):  # the lab file resolves its recipes and templates from here
        (work / linked).symlink_to(ROOT / linked)
    lab_file = work / f"{name}.yml"
    lab_file.write_text(lab_text(name, count, cpus, 160 + secrets.randbelow(40), secrets.randbelow(250)))
    STATE_BASE.mkdir(parents=True, exist_ok=True)
    STATE_BASE.chmod(0o755)
    state = STATE_BASE / token
    env = {**os.environ, "STACKLAB_STATE": str(state)}
    try:
        start = time.monotonic()
        up = cli(["up", "-y", str(lab_file)], env)
        wall = time.monotonic() - start
        if up.returncode != 0:
            raise SystemExit(f"stacklab up failed ({up.returncode}):\n{up.stderr[-3000:]}")
        evts = events(state, name, "up")
        run_start = next(float(e["ts"]) for e in evts if e["type"] == "run_start")
        ends = {
            str(e["resource"]): float(e["ts"]) - run_start
            for e in evts
            if e["type"] == "step_end" and str(e.get("resource", "")).startswith("node/") and e["outcome"] == "ok"
        }
        starts = {
            str(e["resource"]): float(e["ts"]) - run_start
            for e in evts
            if e["type"] == "step_start" and str(e.get("resource", "")).startswith("node/")
        }
        outputs = json.loads((state / name / "state.json").read_text())["resources"]
        boot = sorted(float(outputs[r]["outputs"]["ready_seconds"]) for r in ends)
    finally:
        down = cli(["down", name], env, timeout=600)
        clean = down.returncode == 0 and "leak check: clean" in down.stderr
        if clean:
            shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    if not clean:
        raise SystemExit(f"stacklab down of {name} was not clean ({down.returncode}):\n{down.stderr[-3000:]}")
    return {
        "wall": wall,
        "ready": sorted(ends.values()),
        "node_start": min(starts.values()),
        "boot": boot,
    }


def kcli_report() -> list[str]:
    """Why kcli cannot do the same work here, read from its installed libvirt provider; [] if it could."""
    if importlib.util.find_spec("kvirt") is None:
        return [
            "kcli: not installed (`.venv/bin/pip install kcli`): no kcli time, no ratio",
        ]
    from importlib.metadata import version

    from kvirt.providers.kvm import Kvirt  # type: ignore[import-untyped, import-not-found, unused-ignore]

    source = inspect.getsource(Kvirt.create)
    domain_xml = source.split("vmxml = ")[1].split("</domain>")[0]
    reasons = []
    if "<kernel>" not in domain_xml:
        strips = "os_tag.remove(kernel)" in source
        reasons.append(
            "no direct kernel boot: kcli's domain XML has no <kernel>/<initrd>/<cmdline>"
            + (" (and create() strips them from a domain after its first start)" if strips else "")
            + "; it boots the first disk through SeaBIOS and its `cmdline` option edits the image's bootloader with "
            "virt-customize. stacklab's base qcow2 is an unpartitioned ext4 root with no bootloader, booted by "
            "direct kernel boot, so under kcli the guest never starts"
        )
    if "else 'sata'" in source and "device='cdrom'" in source:
        reasons.append(
            "kcli attaches its cloud-init NoCloud ISO as a SATA CD-ROM on x86_64; the Debian cloud kernel in the "
            "image has no AHCI (CONFIG_SATA_AHCI is not set), so the guest would never see the seed, get the lab "
            "key or its static addresses, and SSH would never answer (host-notes 3b, gotcha 1)"
        )
    if "if capabilities['kvm']:" in source:
        reasons.append(
            "kcli picks domain type kvm whenever libvirt lists kvm, which the host's libvirt does here although "
            "KVM cannot run guests (virttype=qemu would have to be forced)"
        )
    if not reasons:
        return []
    lines = [
        f"kcli {version('kcli')}: installed, but it cannot boot this image to SSH here, so there is no kcli time "
        "and no ratio. `kcli create vm -i <base.qcow2> -P nets=[<br-mgmt>,<br-storage>] -P keys=[<lab key>] "
        "-P memory=1024 -w` would fail because:",
    ]
    lines += [f"  - {r}" for r in reasons]
    lines.append(
        "  A fair run would need a second image that both tools can boot (partitioned, with a bootloader and a "
        "kernel with AHCI such as linux-image-amd64): a different workload from stacklab's direct-kernel-boot "
        "image, not built here."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--vms", default="1,3", help="comma-separated VM counts, one lab each")
    parser.add_argument("--cpus", type=int, default=1, help="vCPUs per VM")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: labs create bridges and libvirt domains")
    print(
        f"stacklab up -> SSH-ready, VM nodes under QEMU TCG, 1 GiB, {args.cpus} vCPU each; host {os.cpu_count()} CPUs"
    )
    kcli = kcli_report()
    for count in (int(c) for c in args.vms.split(",")):
        figures = run(count, args.cpus)
        ready = ", ".join(f"{r:.1f}" for r in figures["ready"])
        boot = ", ".join(f"{b:.1f}" for b in figures["boot"])
        print(
            f"stacklab, {count} VM(s): up -> all SSH-ready {max(figures['ready']):.1f} s (per node {ready} s; "
            f"nodes started at {figures['node_start']:.1f} s; domain start -> ready {boot} s); "
            f"`up` wall {figures['wall']:.1f} s"
        )
        if kcli:
            print(f"kcli,     {count} VM(s): n/a (see below); ratio n/a")
    print("\n".join(kcli) if kcli else "kcli: the reasons it could not boot this image are gone; extend this benchmark")


if __name__ == "__main__":
    main()
