#!/usr/bin/env python3
"""Throughput and IOPS through each storage path (iSCSI, NFS, RBD) from a client node, beside the same workload run
directly on the storage node (the physical ceiling here), printed as ratios.

Usage (root, with the lab up):  .venv/bin/python benchmarks/storage_throughput.py [labs/storage.yml] [--mib 256]

Workload: `qemu-img bench` (QEMU's own block layer, the data path nova and cinder use without kernel drivers).
The ratio base is the same workload on a preallocated local file with O_DIRECT (`-t none`): the disk itself.
tgt and ganesha do buffered I/O on their backing files, so their reads and small writes can beat it (the page-cache
line shows that bound). Every path gets one discarded warm-up run. QEMU's network drivers keep no client cache:
  seq write / seq read   1 MiB requests, queue depth 16, --mib MiB in total
  4k write / 4k read     4 KiB requests, queue depth 32, 20000 requests
Ceilings, on the storage node itself: a raw file next to the iSCSI/NFS backing stores, and RBD as
client.admin over the node's own storage address (cluster ceiling, no client network hop).
When the client is a VM node (its own kernel), the kernel attach paths are measured too, with the same workload on
what they attach, O_DIRECT: the open-iscsi disk `/dev/sdX` of the LUN (the LV-backed one when there is one) and a
file on a kernel NFS mount (the highest version the lab serves). Measured on labs/kernel.yml (VM storage node and VM
client under TCG, host load ~10 from other labs, --mib 64), ratio to the storage node's own disk with O_DIRECT
(842 MiB/s seq write, 1123 MiB/s seq read, ~3400 4k IOPS): LIO file LUN via libiscsi 0.05/0.06/0.08/0.57, LIO LV
LUN via open-iscsi 0.05/0.03/0.23/0.31, knfsd NFSv4 kernel mount 0.04/0.04/0.08/0.17, knfsd NFSv3 via libnfs
0.05/0.05/0.21/0.25 (seq write / seq read / 4k write / 4k read): TCG's emulated network and CPU are the bottleneck.
"""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stacklab.engine.access import node_runner_for  # noqa: E402
from stacklab.exec.runner import Runner  # noqa: E402
from stacklab.model.load import load_lab  # noqa: E402
from stacklab.suites.context import LabContext, build_context  # noqa: E402
from stacklab.suites.storage_paths import (  # noqa: E402
    ISCSI_IFACE_PREFIX,
    NFS_MOUNT,
    SCRATCH,
    client_nodes,
    is_vm,
    kernel_login,
    kernel_logout,
    read_secret,
)

MIB = 1024 * 1024
WORKLOADS = (  # name, write?, request size, queue depth, count (None: from --mib)
    ("seq write MiB/s", True, MIB, 16, None),
    ("seq read MiB/s", False, MIB, 16, None),
    ("4k write IOPS", True, 4096, 32, 20000),
    ("4k read IOPS", False, 4096, 32, 20000),
)


@dataclass
class Path_:
    label: str
    runner: Runner
    opts: str
    cleanup: Callable[[], object] | None = None
    cache: str | None = None  # qemu-img -t for local files


def bench(path: Path_, *, write: bool, size: int, depth: int, count: int) -> float:
    argv = ["qemu-img", "bench", "--image-opts", "-c", str(count), "-d", str(depth), "-s", str(size)]
    argv += ["-t", path.cache] if path.cache else []
    argv += ["-w"] if write else []
    out = path.runner.run([*argv, path.opts], timeout=900.0).stdout
    match = re.search(r"Run completed in ([0-9.]+) seconds", out)
    if not match:
        raise RuntimeError(f"{path.label}: no timing in qemu-img bench output: {out!r}")
    seconds = float(match.group(1))
    return (count * size / MIB / seconds) if size >= MIB else (count / seconds)


def load_context(lab_file: Path) -> LabContext:
    from stacklab.engine.state import StateStore

    lab = load_lab(lab_file)
    import os

    state_dir = Path(os.environ.get("STACKLAB_STATE", ROOT / ".stacklab")) / lab.name
    return LabContext.from_dict(build_context(lab.name, state_dir, StateStore(state_dir.parent, lab.name).resources))


def paths_of(lab: LabContext, mib: int) -> tuple[list[Path_], list[Path_]]:
    runners = node_runner_for(lab.state_dir)
    storage_node = next(rid.partition("/")[2] for rid in lab.outputs if rid.startswith(("iscsi/", "nfs/")))
    storage = runners(storage_node)
    client_name = client_nodes(lab, storage_node)[0]
    client = runners(client_name)
    for node_runner in (storage, client):
        node_runner.run(["install", "-d", "-m", "0700", SCRATCH], timeout=30.0)
    size = f"{mib + 64}M"
    paths: list[Path_] = []
    ceilings: list[Path_] = []

    local = f"{SCRATCH}/bench-local.raw"
    storage.run(["fallocate", "-l", size, local], timeout=60.0)  # allocated, like a written-once LUN
    ceilings.append(
        Path_(
            "storage node: local file, O_DIRECT",
            storage,
            f"driver=file,filename={local}",
            cleanup=lambda: storage.run(["rm", "-f", local], timeout=60.0),
            cache="none",
        )
    )
    ceilings.append(
        Path_("storage node: local file, page cache", storage, f"driver=file,filename={local}", cache="writeback")
    )
    iscsi = lab.outputs.get(f"iscsi/{storage_node}")
    if iscsi:
        name, target = next((n, t) for n, t in sorted(iscsi["targets"].items()) if t["backing"] == "file")
        initiator = iscsi["initiators"][client_name]
        opts = f"driver=iscsi,transport=tcp,portal={iscsi['portal']},target={target['iqn']},lun={target['lun']}"
        opts += f",initiator-name={initiator}"
        if target.get("chap_user"):
            # `qemu-img bench` takes no --object, so no password-secret: the lab's CHAP secret is in this one
            # process's argv on the lab's own client node for the length of the run (the suites use secret files).
            opts += f",user={target['chap_user']},password={read_secret(lab, iscsi['chap_secret_names'][name])}"
        paths.append(Path_(f"iSCSI ({iscsi['implementation']}, {name} file LUN)", client, opts))
        if is_vm(lab, client_name):
            paths.append(kernel_iscsi_path(lab, client, client_name, iscsi))
    nfs = lab.outputs.get(f"nfs/{storage_node}")
    if nfs:
        export = nfs["exports"][sorted(nfs["exports"])[0]]
        image = f"{export}/bench-{uuid.uuid4().hex[:6]}.raw"
        url = f"nfs://{nfs['server']}{image}"
        client.run(["qemu-img", "create", "-f", "raw", url, size], timeout=120.0)
        if is_vm(lab, client_name):
            paths.append(kernel_nfs_path(client, storage, nfs, size))
        paths.append(
            Path_(
                f"NFSv3 ({nfs['implementation']}, libnfs)",
                client,
                f"driver=nfs,server.type=inet,server.host={nfs['server']},path={image}",
                cleanup=lambda: storage.run(["rm", "-f", image], timeout=60.0),
            )
        )
    ceph = next((out for rid, out in lab.outputs.items() if rid.startswith("ceph/")), None)
    if ceph:
        pool = "volumes" if "volumes" in ceph["pools"] else ceph["pools"][0]
        image = f"bench-{uuid.uuid4().hex[:6]}"
        storage.run(["rbd", "create", "--size", str(mib + 64), f"{pool}/{image}"], timeout=120.0)
        user = "cinder" if "cinder" in ceph["clients"] else "admin"
        rbd_opts = f"driver=rbd,pool={pool},image={image},conf=/etc/ceph/ceph.conf"
        paths.append(
            Path_(
                f"RBD (librbd as client.{user})",
                client,
                f"{rbd_opts},user={user}",
                cleanup=lambda: storage.run(["rbd", "rm", "--no-progress", f"{pool}/{image}"], timeout=120.0),
            )
        )
        ceilings.append(Path_("storage node: RBD as client.admin", storage, f"{rbd_opts},user=admin"))
    return paths, ceilings


def kernel_iscsi_path(lab: LabContext, client: Runner, client_name: str, iscsi: Mapping[str, Any]) -> Path_:
    """open-iscsi on a VM client: log in to the LV-backed LUN (else the first), bench its SCSI disk with O_DIRECT."""
    targets = sorted(iscsi["targets"].items(), key=lambda item: (item[1]["backing"] != "lvm", item[0]))
    name, target = targets[0]
    chap = None
    if target.get("chap_user"):
        chap = (str(target["chap_user"]), read_secret(lab, iscsi["chap_secret_names"][name]))
    iface, portal, iqn = f"{ISCSI_IFACE_PREFIX}{lab.lab}", str(iscsi["portal"]), str(target["iqn"])
    initiator = str(iscsi["initiators"][client_name])
    try:
        session = kernel_login(client, iface=iface, initiator=initiator, iqn=iqn, portal=portal, chap=chap)
    except Exception:
        kernel_logout(client, iface=iface, iqn=iqn, portal=portal)
        raise
    return Path_(
        f"iSCSI ({iscsi['implementation']}, {name} {target['backing']}, open-iscsi {session.device})",
        client,
        f"driver=host_device,filename={session.device}",
        cleanup=lambda: kernel_logout(client, iface=iface, iqn=iqn, portal=portal),
        cache="none",
    )


def kernel_nfs_path(client: Runner, storage: Runner, nfs: Mapping[str, Any], size: str) -> Path_:
    """A kernel NFS mount on a VM client: bench a preallocated file on it with O_DIRECT."""
    version = max(int(v) for v in nfs["versions"])
    export = nfs["exports"][sorted(nfs["exports"])[0]]
    mnt = f"{NFS_MOUNT}-bench"
    client.run(["mkdir", "-p", mnt], timeout=30.0)
    client.run(
        ["mount", "-t", "nfs", "-o", f"vers={version},proto=tcp", f"{nfs['server']}:{export}", mnt], timeout=120.0
    )
    name = f"bench-{uuid.uuid4().hex[:6]}.raw"
    client.run(["fallocate", "-l", size, f"{mnt}/{name}"], timeout=120.0)

    def cleanup() -> None:
        client.run(["umount", mnt], timeout=120.0, check=False)
        client.run(["rmdir", mnt], timeout=30.0, check=False)
        storage.run(["rm", "-f", f"{export}/{name}"], timeout=60.0)

    return Path_(
        f"NFSv{version} ({nfs['implementation']}, kernel mount)",
        client,
        f"driver=file,filename={mnt}/{name}",
        cleanup=cleanup,
        cache="none",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lab", nargs="?", default=str(ROOT / "labs" / "storage.yml"))
    parser.add_argument("--mib", type=int, default=256, help="MiB per sequential run (default 256)")
    args = parser.parse_args()
    lab = load_context(Path(args.lab))
    paths, ceilings = paths_of(lab, args.mib)
    results: dict[str, dict[str, float]] = {}
    try:
        for path in [*ceilings, *paths]:
            results[path.label] = {}
            bench(path, write=True, size=MIB, depth=16, count=args.mib)  # warm-up: allocate, connect, fill caches
            for name, write, size, depth, count in WORKLOADS:
                n = count or args.mib
                results[path.label][name] = bench(path, write=write, size=size, depth=depth, count=n)
                print(f"  {path.label:38} {name:16} {results[path.label][name]:10.1f}", file=sys.stderr)
    finally:
        for path in [*paths, *ceilings]:
            if path.cleanup:
                path.cleanup()
    disk = results[ceilings[0].label]
    names = [w[0] for w in WORKLOADS]
    print(f"\n{'path':40}" + "".join(f"{n:>18}" for n in names))
    for label, row in results.items():
        print(f"{label:40}" + "".join(f"{row[n]:18.1f}" for n in names))
    print(f"\nratio to '{ceilings[0].label}' (the physical ceiling on this host)")
    for label, row in results.items():
        if label != ceilings[0].label:
            print(f"{label:40}" + "".join(f"{row[n] / disk[n]:18.2f}" for n in names))
    rbd_ceiling = next((c for c in ceilings if "RBD" in c.label), None)
    rbd_path = next((p for p in paths if p.label.startswith("RBD")), None)
    if rbd_ceiling and rbd_path:
        print("\nRBD from the client vs RBD on the storage node (network hop and cephx client only)")
        row, base = results[rbd_path.label], results[rbd_ceiling.label]
        print(f"{rbd_path.label:40}" + "".join(f"{row[n] / base[n]:18.2f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
