#!/usr/bin/env python3
"""Time from `stacklab up` to SSH-ready (lab key answers and cloud-init done) for 1 and 3 VM nodes, beside kcli.

Usage (root, from the repository root):  .venv/bin/python benchmarks/vm_ssh_ready.py [--vms 1,3] [--cpus 1]

For each count a lab with that many VM nodes (1 GiB each, on br-mgmt and br-storage, unique name and subnets)
is brought up with the real CLI (`stacklab up -y`), timed from the start of the command, and taken down again
(`down` must report a clean leak check). Figures come from stacklab's own JSONL event log of that `up`:
"ready" is each node step's end relative to the run's start (the node step ends once SSH answers with the lab
key and `cloud-init status --wait` is done), "wall" the whole command. Images and VM base disks are built
before any timing (the first run of this script builds them; later runs reuse the cache).

kcli (`pip install kcli`) does the same work on one shared image (see `kcli_peer.py`: stacklab's base recipe
with the generic kernel, which kcli's SATA seed needs): `kcli create plan` of the same VMs on the bridges of a
networks-only stacklab lab, then stacklab's own readiness check on each VM. The ratio is kcli's time over
stacklab's on that shared image; stacklab's figure on its default (cloud-kernel) image is printed as well.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
STACKLAB = [sys.executable, "-m", "stacklab"]
# QEMU runs as libvirt-qemu and must search every directory above its disks: not under a 0700 tmp dir.
STATE_BASE = Path("/var/tmp/stacklab-bench-vm")
BASE = "debian-12-base"
MEMORY_MIB = 1024


@dataclass(frozen=True)
class Subnets:
    """Per-run /24s for br-mgmt and br-storage (random, so parallel runs and leftovers do not clash)."""

    octet: int
    third: int

    @classmethod
    def random(cls) -> Subnets:
        return cls(160 + secrets.randbelow(40), secrets.randbelow(250))

    def cidr(self, net: str) -> str:
        return f"10.{self.octet + (40 if net == 'storage' else 0)}.{self.third}.0/24"

    def address(self, net: str, host: int) -> str:
        return self.cidr(net).replace(".0/24", f".{host}")


def lab_text(name: str, count: int, cpus: int, subnets: Subnets, recipe: str = BASE) -> str:
    lines = [
        f"name: {name}",
        "networks:",
        f"  mgmt: {{bridge: br-mgmt, cidr: {subnets.cidr('mgmt')}}}",
        f"  storage: {{bridge: br-storage, cidr: {subnets.cidr('storage')}}}",
    ]
    if count:
        lines += ["images:", f"  base: {{recipe: {recipe}}}", "nodes:"]
    lines += [
        f"  vm{i}: {{kind: vm, image: base, cpus: {cpus}, memory: {MEMORY_MIB}MiB, nics: [mgmt, storage]}}"
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


@dataclass(frozen=True)
class LabRun:
    name: str
    lab_file: Path
    state: Path
    env: dict[str, str]
    subnets: Subnets

    def resources(self) -> dict[str, Any]:
        return dict(json.loads((self.state / self.name / "state.json").read_text())["resources"])


@contextmanager
def stacklab_lab(work: Path, count: int, cpus: int, recipe: str = BASE) -> Iterator[LabRun]:
    """A lab file for `count` VMs (0: networks only) and its state dir; `down` (leak-checked) on exit."""
    token = secrets.token_hex(2)
    name = f"vmb-{token}"
    subnets = Subnets.random()
    lab_file = work / f"{name}.yml"
    lab_file.write_text(lab_text(name, count, cpus, subnets, recipe))
    state = STATE_BASE / token
    env = {**os.environ, "STACKLAB_STATE": str(state)}
    try:
        yield LabRun(name, lab_file, state, env, subnets)
    finally:
        down = cli(["down", name], env, timeout=600)
        clean = down.returncode == 0 and "leak check: clean" in down.stderr
        if clean:
            shutil.rmtree(state, ignore_errors=True)
    if not clean:
        raise SystemExit(f"stacklab down of {name} was not clean ({down.returncode}):\n{down.stderr[-3000:]}")


def up(lab: LabRun) -> float:
    start = time.monotonic()
    result = cli(["up", "-y", str(lab.lab_file)], lab.env)
    if result.returncode != 0:
        raise SystemExit(f"stacklab up of {lab.name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return time.monotonic() - start


def run(work: Path, count: int, cpus: int, recipe: str = BASE) -> dict[str, Any]:
    """One lab of `count` VMs: up (timed), down (leak-checked); the figures of that up."""
    with stacklab_lab(work, count, cpus, recipe) as lab:
        wall = up(lab)
        evts = events(lab.state, lab.name, "up")
        run_start = next(float(e["ts"]) for e in evts if e["type"] == "run_start")
        ends = {
            str(e["resource"]): float(e["ts"]) - run_start
            for e in evts
            if e["type"] == "step_end" and str(e.get("resource", "")).startswith("node/") and e["outcome"] == "ok"
        }
        starts = [
            float(e["ts"]) - run_start
            for e in evts
            if e["type"] == "step_start" and str(e.get("resource", "")).startswith("node/")
        ]
        outputs = lab.resources()
        boot = sorted(float(outputs[r]["outputs"]["ready_seconds"]) for r in ends)
    return {"wall": wall, "ready": sorted(ends.values()), "node_start": min(starts), "boot": boot}


def run_kcli(work: Path, count: int, cpus: int, disk: Path, hide_kvm: bool) -> dict[str, float]:
    """kcli's plan of `count` VMs on a networks-only stacklab lab's bridges: seconds to each VM ready."""
    from kcli_peer import KcliLab, KcliVM

    from stacklab.drivers.nodes import libvirtd
    from stacklab.exec.runner import LocalRunner

    runner = LocalRunner()
    with stacklab_lab(work, 0, cpus) as lab:
        up(lab)
        resources = lab.resources()
        mgmt, storage = (
            str(next(r["outputs"]["ifname"] for rid, r in resources.items() if rid.endswith(f"/{net}")))
            for net in ("mgmt", "storage")
        )
        key = work / f"kcli-{lab.name}-key"
        runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kcli-bench", "-f", str(key)], timeout=30)
        handle = libvirtd.ensure_libvirtd(runner, hide_kvm=hide_kvm)
        kcli = KcliLab(lab.name.removeprefix("vmb-"), work / f"kcli-{lab.name}", disk, key)
        try:
            vms = [
                KcliVM(
                    f"kcli-{lab.name}-vm{i}",
                    lab.subnets.address("mgmt", 10 + i),
                    lab.subnets.address("storage", 10 + i),
                )
                for i in range(1, count + 1)
            ]
            times = kcli.up(vms, (mgmt, storage), prefix=24, memory_mib=MEMORY_MIB, cpus=cpus)
        finally:
            problems = kcli.close()
            if handle.started_now:
                libvirtd.stop_owned_libvirtd()
        if problems:
            raise SystemExit("kcli cleanup left objects behind:\n" + "\n".join(problems))
    return times


def prepare(work: Path, with_kcli: bool) -> Path | None:
    """Images and base disks built before any timing, an images dir for the labs; kcli's disk (or None)."""
    from stacklab.drivers.nodes import vm_disk
    from stacklab.drivers.nodes.image import ImageBuilder, cache_root
    from stacklab.drivers.nodes.recipe import resolve_recipe
    from stacklab.exec.runner import LocalRunner

    runner = LocalRunner()
    images = work / "images"
    images.mkdir()
    for recipe in (ROOT / "images").glob("*.yml"):
        (images / recipe.name).symlink_to(recipe)
    (work / "cloud-init").symlink_to(ROOT / "cloud-init")
    base = ImageBuilder(runner=runner, cache=cache_root(), progress=print).ensure(resolve_recipe(images, BASE))
    vm_disk.ensure_base_disk(base.rootfs, base.directory.name.rsplit("-", 1)[1], runner, progress=print)
    if not with_kcli:
        return None
    from kcli_peer import boot_disk, build_generic, generic_recipe

    generic_recipe(ROOT / "images", images)
    rootfs, image_hash = build_generic(images, runner)
    return boot_disk(rootfs, image_hash, STATE_BASE / "kcli-images", runner)


def kvm_hidden() -> bool:
    """True when KVM cannot run guests here (then the benchmark's libvirtd offers TCG only, as stacklab's does)."""
    from stacklab.exec.runner import LocalRunner
    from stacklab.host.capabilities import probe_host

    return probe_host(LocalRunner()).kvm.usable_for_guests is not True


def summary(tool: str, count: int, ready: list[float], extra: str = "") -> str:
    per_vm = ", ".join(f"{r:.1f}" for r in sorted(ready))
    return f"{tool}, {count} VM(s): all SSH-ready {max(ready):.1f} s (per VM {per_vm} s){extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--vms", default="1,3", help="comma-separated VM counts, one lab each")
    parser.add_argument("--cpus", type=int, default=1, help="vCPUs per VM")
    parser.add_argument("--tools", default="stacklab,kcli", help="which tools to run (ratios need both)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: labs create bridges and libvirt domains")
    tools = set(args.tools.split(","))
    with_kcli = "kcli" in tools and importlib.util.find_spec("kvirt") is not None
    if "kcli" in tools and not with_kcli:
        print("kcli is not installed (`.venv/bin/pip install -e '.[bench]'`): stacklab figures only")
    STATE_BASE.mkdir(parents=True, exist_ok=True)
    STATE_BASE.chmod(0o755)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=STATE_BASE))
    work.chmod(0o755)
    try:
        disk = prepare(work, with_kcli)
        hidden = kvm_hidden()
        accel = "QEMU TCG" if hidden else "KVM"
        print(
            f"up -> SSH-ready, VMs under {accel}, {MEMORY_MIB} MiB, {args.cpus} vCPU each; host {os.cpu_count()} CPUs"
        )
        for count in (int(c) for c in args.vms.split(",")):
            if "stacklab" in tools:
                own = run(work, count, args.cpus)
                boot = ", ".join(f"{b:.1f}" for b in own["boot"])
                print(
                    summary(
                        f"stacklab ({BASE}, cloud kernel)",
                        count,
                        own["ready"],
                        f"; nodes started at {own['node_start']:.1f} s, domain start -> ready {boot} s; "
                        f"`up` wall {own['wall']:.1f} s",
                    )
                )
            if disk is None:
                continue
            from kcli_peer import GENERIC

            shared: list[float] = []
            if "stacklab" in tools:
                figures = run(work, count, args.cpus, GENERIC)
                shared = figures["ready"]
                print(
                    summary(
                        f"stacklab ({GENERIC}, shared image)", count, shared, f"; `up` wall {figures['wall']:.1f} s"
                    )
                )
            times = run_kcli(work, count, args.cpus, disk, hidden)
            created = times.pop("created")
            print(
                summary(
                    f"kcli     ({GENERIC}, shared image)",
                    count,
                    list(times.values()),
                    f"; `kcli create plan` returned at {created:.1f} s",
                )
            )
            if shared:
                ratio = max(times.values()) / max(shared)
                print(f"ratio kcli / stacklab, {count} VM(s), same image: {ratio:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
