"""Time from domain start to SSH-ready (lab key answers and cloud-init done) for 1 and 3 VM nodes, via VmDriver.

Run as root from the repository root:  .venv/bin/python -m benchmarks.vm_ssh_ready [--vms 1,3]

Setup (not timed): two throwaway bridges with unique names, an ed25519 key, the base qcow2 (built once from the
image rootfs; the same one the integration test uses). Timed: `VmDriver.apply()` per node, run in parallel
threads as the engine does; "wall" is from the first apply to the last node ready, "ready" is each node's own
start-to-ready time from its outputs. Everything is deleted afterwards (and the libvirtd the driver started is
stopped by the last delete).

kcli comparison: kcli (`pip install kcli`, module `kvirt`) is checked for and its libvirt provider inspected;
see `kcli_report()` for what it would do with the same qcow2 and why it cannot boot it to SSH here.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib.util
import inspect
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.vm import VmDriver
from stacklab.exec.runner import LocalRunner
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Change, Resource
from tests.integration.test_vm_node import WORK, minimal_seed, seed_writer

LAB = """
name: {name}
prefix: {prefix}
networks:
  mgmt: {{bridge: m, cidr: 10.{octet}.1.0/24}}
  storage: {{bridge: s, cidr: 10.{octet}.2.0/24}}
images:
  base: {{recipe: debian-12-base}}
nodes:
{nodes}
"""
NODE = """  vm{i}:
    kind: vm
    image: base
    cpus: {cpus}
    memory: 1GiB
    nics: [mgmt, storage]
"""


def find_rootfs() -> tuple[Path, str]:
    for candidate in sorted(Path("/var/cache/stacklab/images").glob("**/rootfs/boot/vmlinuz-*")):
        root = candidate.parent.parent
        return root, f"cached-{int(root.stat().st_mtime)}"
    root = WORK / "rootfs"
    if not list((root / "boot").glob("vmlinuz-*")):
        sys.exit(f"no rootfs with a kernel: run tests/integration/test_vm_node.py once (builds {root})")
    return root, f"vmtest-{int((root / 'etc/os-release').stat().st_mtime)}"


def run(count: int, cpus: int, rootfs: tuple[Path, str]) -> dict[str, Any]:
    token = secrets.token_hex(2)
    nodes = "".join(NODE.format(i=i, cpus=cpus) for i in range(1, count + 1))
    lab = load_lab_text(
        LAB.format(name=f"vmb{token}", prefix=f"b{token[:3]}", octet=200 + secrets.randbelow(50), nodes=nodes),
        "bench.yml",
    )
    resources = [r for r in expand(lab, {"node_kind": "vm", "accel": "tcg"}) if r.kind == "node"]
    runner = LocalRunner()
    state_dir = WORK / "state" / lab.name
    state_dir.mkdir(parents=True)
    key = state_dir / "id_ed25519"
    runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], timeout=30)
    ctx = DriverContext(
        lab=lab,
        runner=runner,
        state_dir=state_dir,
        outputs={
            "image/base": {"rootfs": str(rootfs[0]), "hash": rootfs[1]},
            f"sshkey/{lab.name}": {"private_key": str(key), "public_key": f"{key}.pub"},
        },
    )
    driver = VmDriver(seed_writer=seed_writer())
    bridges: list[str] = []
    outputs: dict[str, Any] = {}
    try:
        for name, net in lab.networks.items():
            ifname = lab.bridge_ifname(name)
            runner.run(["ip", "link", "add", "name", ifname, "type", "bridge"], timeout=30)
            bridges.append(ifname)
            runner.run(["ip", "link", "set", ifname, "up"], timeout=30)
            runner.run(["ip", "addr", "add", f"{net.gateway_address}/{net.cidr.prefixlen}", "dev", ifname], timeout=30)

        def apply(resource: Resource) -> tuple[str, Any]:
            return resource.name, driver.apply(Change(resource, Action.CREATE), ctx)

        start = time.monotonic()
        with cf.ThreadPoolExecutor(count) as pool:
            outputs = dict(pool.map(apply, resources))
        wall = time.monotonic() - start
    finally:
        for resource in resources:
            driver.delete(resource.id, {"outputs": outputs.get(resource.name, {})}, ctx)
        for ifname in bridges:
            runner.run(["ip", "link", "del", ifname], timeout=30, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
    return {"wall": wall, "ready": sorted(o["ready_seconds"] for o in outputs.values())}


def kcli_report() -> list[str]:
    """What kcli would do with the same qcow2, read from its installed libvirt provider, and why it can't here."""
    spec = importlib.util.find_spec("kvirt")
    if spec is None or (shutil.which("kcli") is None and not (Path(sys.executable).parent / "kcli").exists()):
        return ["kcli: not installed (`.venv/bin/pip install kcli`); no kcli numbers"]
    from kvirt.providers.kvm import Kvirt  # type: ignore[import-untyped, import-not-found, unused-ignore]

    source = inspect.getsource(Kvirt.create)
    seed_on_sata = "isobus = 'scsi' if (aarch64_full or as390x) else 'sata'" in source
    no_kernel_boot = "<kernel>" not in source.split("vmxml = ")[1].split("</domain>")[0]
    lines = [
        "kcli: installed; `kcli create vm -i base.qcow2 -P nets=[<bridge>] -P keys=[<pub>] -P memory=1024 ...`",
        "  would: copy/overlay the image in a libvirt pool, build a NoCloud ISO (user-data with the keys, meta-data,",
        "  network-config), define <domain type=kvm|qemu> (qemu when capabilities lack kvm) booting from the disk",
        "  through SeaBIOS, attach the ISO as a CD-ROM, start, and (with -w) wait for cloud-init over SSH.",
    ]
    reasons = []
    if no_kernel_boot:
        reasons.append(
            "kcli's domain XML has no <kernel>/<initrd>/<cmdline> (its `cmdline` parameter edits the image's "
            "bootloader with virt-customize), but the base qcow2 is an unpartitioned ext4 root without a "
            "bootloader, booted by direct kernel boot: from kcli it would not boot at all"
        )
    if seed_on_sata:
        reasons.append(
            "kcli attaches the cloud-init ISO as a SATA CD-ROM on x86_64; the Debian cloud kernel has no AHCI, so "
            "the guest never sees the seed, gets no key, and SSH never answers (host-notes 3b, gotcha 1)"
        )
    if reasons:
        lines.append("kcli cannot boot this qcow2 to SSH here, so no kcli time and no ratio:")
        lines += [f"  - {r}" for r in reasons]
    else:
        lines.append("kcli's provider changed since this check was written: inspect it and extend the benchmark")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", default="1,3", help="comma-separated VM counts to boot at once")
    parser.add_argument("--cpus", type=int, default=1, help="vCPUs per VM")
    args = parser.parse_args()
    rootfs = find_rootfs()
    seed = "minimal test seed (drivers/seed.py not in the tree yet)" if seed_writer() is minimal_seed else "seed.py"
    print(f"rootfs {rootfs[0]}; seed: {seed}; TCG; host has {os.cpu_count()} CPUs")
    for count in (int(c) for c in args.vms.split(",")):
        result = run(count, args.cpus, rootfs)
        ready = ", ".join(f"{r:.1f}" for r in result["ready"])
        print(
            f"stacklab VmDriver, {count} VM(s), {args.cpus} vCPU, 1 GiB: wall {result['wall']:.1f} s; ready {ready} s"
        )
    for line in kcli_report():
        print(line)


if __name__ == "__main__":
    main()
