#!/usr/bin/env python3
"""The reference lab (labs/reference.yml: LXC controller, VM storage node with cinder's lvm and nfs backends, VM
compute with nova): `up`, `verify --suite volumes --suite attach` and `down` times, then the attach data path's
throughput per cinder kernel backend as a ratio to the same workload on the storage node's own disk.

Usage (root):  .venv/bin/python benchmarks/reference_lab.py [--mib 64] [--suite volumes --suite attach]
               .venv/bin/python benchmarks/reference_lab.py --up LAB_FILE [--mib 64]   (a lab that is up: no
               up/verify/down, throughput only; STACKLAB_STATE as for that lab)

Data path: one suites' guest (guest_initrd.py) booted through nova on the compute (nested TCG: its boot time, from
the boot request to its `stacklab-guest: booted` console line, is printed), and per backend a 1 GiB volume of the
backend's type attached to it through nova; on the compute, what os-brick attached carries the workload: the
iSCSI disk /dev/sdX of os-brick's session (lvm-lioadm, lvm-tgtadm) or the volume file on os-brick's kernel NFS
mount (nfs), `dd` 1 MiB blocks with O_DIRECT, --mib MiB written (fdatasync) then read, past the first 16 MiB (the
guest's line stays). The ratio base is the same dd on a preallocated file on the storage node's root disk with
O_DIRECT. The attach itself (nova -> cinder -> os-brick -> libvirt hot-plug) is timed per backend too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lab import bench_lab  # noqa: E402

from stacklab.engine.access import node_runner_for  # noqa: E402
from stacklab.exec.runner import Runner  # noqa: E402
from stacklab.model.load import load_lab  # noqa: E402
from stacklab.suites import attach_backends  # noqa: E402
from stacklab.suites.context import LabContext, build_context  # noqa: E402
from stacklab.suites.guest import FLAVOR, guest_image  # noqa: E402
from stacklab.suites.openstack_calls import admin_auth  # noqa: E402
from stacklab.suites.storage_paths import session_block  # noqa: E402

STACKLAB = [sys.executable, "-m", "stacklab"]
SKIP_MIB = 16  # the guest's line is at the start of the volume
BOOTED = re.compile(r"stacklab-guest: booted")


def cli(args: list[str], env: Mapping[str, str], timeout: float) -> float:
    start = time.monotonic()
    result = subprocess.run([*STACKLAB, *args], env=dict(env), cwd=ROOT, capture_output=True, text=True,
                            check=False, timeout=timeout)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"stacklab {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - start


def load_context(lab_file: Path) -> LabContext:
    from stacklab.engine.state import StateStore

    lab = load_lab(lab_file)
    state_dir = Path(os.environ.get("STACKLAB_STATE", ROOT / ".stacklab")) / lab.name
    return LabContext.from_dict(build_context(lab.name, state_dir, StateStore(state_dir.parent, lab.name).resources))


def dd_mib_s(runner: Runner, argv: list[str]) -> float:
    """MiB/s of one dd run (its own byte count and seconds, from the summary line on stderr)."""
    out = runner.run(argv, timeout=1800.0).stderr
    match = re.search(r"^(\d+) bytes .* copied, ([0-9.]+) s", out, flags=re.M)
    if not match:
        raise RuntimeError(f"no dd summary in {out!r}")
    return int(match.group(1)) / (1024 * 1024) / float(match.group(2))


def workload(runner: Runner, target: str, mib: int) -> tuple[float, float]:
    """(write MiB/s, read MiB/s): `mib` 1 MiB blocks past SKIP_MIB, O_DIRECT, written then read."""
    common = ["bs=1M", f"count={mib}"]
    write = [
        "dd",
        "if=/dev/zero",
        f"of={target}",
        *common,
        f"seek={SKIP_MIB}",
        "oflag=direct",
        "conv=notrunc,fdatasync",
    ]
    read = ["dd", f"if={target}", "of=/dev/null", *common, f"skip={SKIP_MIB}", "iflag=direct"]
    return dd_mib_s(runner, write), dd_mib_s(runner, read)


def wait_console(compute: Runner, path: str, pattern: re.Pattern[str], budget: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < budget:
        text = compute.run(["cat", path], timeout=60.0, check=False).stdout
        if pattern.search(text):
            return time.monotonic() - start
        time.sleep(2.0)
    raise RuntimeError(f"{path} never showed {pattern.pattern} in {budget:g}s")


def attached_target(lab: LabContext, runners: Mapping[str, Runner], kv: attach_backends.KernelVolume,
                    compute: str) -> str:  # fmt: skip
    """What os-brick attached on the compute for the volume: the session's disk, or the file on the NFS mount."""
    if kv.driver == "lvm":
        iqn, _ = attach_backends.target_iqn(runners[kv.node], kv)
        disk = attach_backends.attached_disk(session_block(attach_backends.iscsi_sessions(runners[compute]), iqn))
        assert disk, f"no iSCSI disk of {iqn} on {compute}"
        return f"/dev/{disk}"
    mounts = attach_backends.nfs_mounts_of(attach_backends.compute_mounts(runners[compute]), kv.share)
    assert mounts, f"no kernel NFS mount of {kv.share} on {compute}"
    return f"{mounts[0]['TARGET']}/volume-{kv.volume_id}"


def throughput(lab: LabContext, mib: int) -> dict[str, Any]:
    node_runner = node_runner_for(lab.state_dir)
    runners = {name: node_runner(name) for name in lab.nodes}
    nova, cinder = lab.outputs["service/nova"], lab.outputs["service/cinder"]
    controller, auth = runners[str(nova["node"])], admin_auth(lab)
    backends = dict(cinder.get("kernel_backends") or {})
    wait = attach_backends.KERNEL_WAIT
    storage = str(next(iter(backends.values()))["node"])
    out: dict[str, Any] = {"backends": {}}

    base = "/var/tmp/stacklab-bench-base.raw"
    runners[storage].run(["fallocate", "-l", f"{mib + SKIP_MIB}M", base], timeout=120.0)
    try:
        out["base"] = workload(runners[storage], base, mib)
    finally:
        runners[storage].run(["rm", "-f", base], timeout=60.0)

    def call(service: str, action: str, **request: Any) -> dict[str, Any]:
        return attach_backends.os_call(controller, service, action, {**auth, **request}, wait=wait)

    with guest_image(controller, auth) as image:
        start = time.monotonic()
        server = call("nova", "boot", name="stacklab-bench-attach", image_id=image.image_id, **FLAVOR)
        try:
            out["active_s"] = time.monotonic() - start
            compute = str(server["host"])
            console = f"{nova['instances_path']}/{server['id']}/console.log"
            out["booted_s"] = out["active_s"] + wait_console(runners[compute], console, BOOTED, 1800.0)
            out["compute"] = compute
            for backend, entry in backends.items():
                made = call("cinder", "create", size_gb=1, name=f"stacklab-bench-{backend}",
                            volume_type=entry["volume_type"])  # fmt: skip
                try:
                    start = time.monotonic()
                    call("nova", "attach", server_id=server["id"], volume_id=made["id"])
                    attach_s = time.monotonic() - start
                    kv = attach_backends.kernel_volume(lab, runners, backend, str(made["id"]))
                    target = attached_target(lab, runners, kv, compute)
                    write, read = workload(runners[compute], target, mib)
                    out["backends"][backend] = {"attach_s": attach_s, "target": target, "write": write, "read": read}
                    call("nova", "detach", server_id=server["id"], volume_id=made["id"])
                finally:
                    call("cinder", "delete", volume_id=made["id"])
        finally:
            call("nova", "delete", server_id=server["id"])
    return out


def report(results: Mapping[str, Any], mib: int) -> None:
    times = results.get("times") or {}
    if times:
        print("reference lab: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in times.items()))
    data = results["throughput"]
    print(f"nested TCG guest on {data['compute']}: ACTIVE {data['active_s']:.0f} s, booted {data['booted_s']:.0f} s")
    base_write, base_read = data["base"]
    print(f"{mib} MiB, 1 MiB blocks, O_DIRECT; base = the storage node's own disk: write {base_write:.1f} MiB/s, "
          f"read {base_read:.1f} MiB/s")  # fmt: skip
    print(
        f"{'backend':<11} {'attach s':>8} {'write MiB/s':>12} {'ratio':>6} {'read MiB/s':>11} {'ratio':>6}  on compute"
    )
    for backend, got in data["backends"].items():
        print(f"{backend:<11} {got['attach_s']:>8.0f} {got['write']:>12.1f} {got['write'] / base_write:>6.3f} "
              f"{got['read']:>11.1f} {got['read'] / base_read:>6.3f}  {got['target']}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--suite", action="append", default=None, help="verify suites (default: volumes, attach)")
    parser.add_argument("--up", type=Path, default=None, help="the file of a lab that is up: throughput only")
    args = parser.parse_args()
    if args.up is not None:
        report({"throughput": throughput(load_context(args.up), args.mib)}, args.mib)
        return 0
    lab = bench_lab("reference", "rb")
    times: dict[str, float] = {}
    try:
        times["up"] = cli(["up", "-y", str(lab.file)], lab.env, 5400)
        suites = [a for s in (args.suite or ["volumes", "attach"]) for a in ("--suite", s)]
        times["verify"] = cli(["verify", lab.name, *suites], lab.env, 7200)
        os.environ["STACKLAB_STATE"] = str(lab.state)
        data = throughput(load_context(lab.file), args.mib)
    finally:
        start = time.monotonic()
        subprocess.run([*STACKLAB, "down", lab.name], env=lab.env, cwd=ROOT, check=False, timeout=1800)
        times["down"] = time.monotonic() - start
        shutil.rmtree(lab.work, ignore_errors=True)
    report({"times": times, "throughput": data}, args.mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
