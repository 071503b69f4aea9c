"""Where the `attach` suite finds a cinder kernel backend's volume (lvm with LIO or tgt, nfs) and the path that
carried the guest's bytes, through stacklab's SSH runner. RBD stays in guest.py (QEMU's librbd to the OSDs).

- Read back on the backend itself: the first line of the LV `/dev/<vg>/volume-<id>` on the storage node, or of the
  volume file `<export>/volume-<id>` in the NFS server's export directory, read with O_DIRECT (no page cache on the
  storage node stands in for what the target or knfsd wrote).
- The transport on the compute while attached: lvm, the iSCSI session os-brick logged in (`iscsiadm -m session
  -P 3`) to the target whose LUN is that LV, from the compute's br-storage address to the backend's portal, as the
  compute's own initiator IQN (the target's ACL on LIO names it); nfs, the kernel NFS mount of the share cinder
  named, from the NFS server's storage address, holding the volume file. After detach: neither is left.

Pure parsers and checks take recorded outputs (unit-tested); the rest runs commands on the nodes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from stacklab.exec.node_files import write_node_file
from stacklab.exec.runner import Runner
from stacklab.suites import cinder_kernel_paths
from stacklab.suites.context import LabContext
from stacklab.suites.openstack_calls import OS_CLIENT
from stacklab.suites.storage_paths import session_block

# cinder-volume's rootwrap calls in a TCG VM take 30-90 s each on a loaded 2-core host; os-brick's login and the
# hot-plug on a TCG compute add their own (test_volumes.py KERNEL_WAIT)
KERNEL_WAIT = 900.0
FINDMNT_FIELDS = "SOURCE,TARGET,FSTYPE,OPTIONS"


def os_call(
    runner: Runner, service_name: str, action: str, request: Mapping[str, Any], *, wait: float
) -> dict[str, Any]:
    """os_client.py SERVICE ACTION on the node with `wait` seconds for the volume's status (openstack_calls.os_client
    allows 300 s in all; a kernel backend's create or attach can take longer on this host)."""
    write_node_file(runner, OS_CLIENT, resources.files("stacklab.suites").joinpath("os_client.py").read_text())
    body = json.dumps({**request, "wait": wait})
    result = runner.run(["python3", OS_CLIENT, service_name, action], input=body, timeout=wait + 300, check=False)
    assert result.ok, f"os_client {service_name} {action} failed: {result.stderr[-1500:]}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


# -- pure: parsers and checks on recorded outputs -------------------------------------------------------------


def parse_mounts(text: str) -> list[dict[str, str]]:
    """`findmnt -n -P -o SOURCE,TARGET,FSTYPE,OPTIONS` (any number of lines) -> one dict per mount."""
    return [cinder_kernel_paths.parse_findmnt(line) for line in text.splitlines() if line.strip()]


def initiator_name(text: str) -> str:
    """/etc/iscsi/initiatorname.iscsi -> its InitiatorName ("" when the file has none yet)."""
    found = re.search(r"^InitiatorName=(\S+)\s*$", text, flags=re.M)
    return found.group(1) if found else ""


def iscsi_session_problems(block: str, *, iqn: str, portal: str, source_ip: str) -> list[str]:
    """What is wrong with the session to `iqn` (storage_paths.session_block of `iscsiadm -m session -P 3`) for a
    volume os-brick attached: it must exist, be logged in through `portal` from `source_ip`, with a disk."""
    if not block:
        return [f"no iSCSI session to {iqn} on the compute"]
    seen = {key: re.findall(rf"{key}: (\S+)", block) for key in ("Current Portal", "Iface IPaddress")}
    state = re.findall(r"iSCSI Session State: (\S+)", block)
    found = []
    if f"Current Portal: {portal}," not in block:
        found.append(f"the session to {iqn} is not through {portal}: {seen['Current Portal']}")
    if source_ip not in seen["Iface IPaddress"]:
        found.append(f"the session to {iqn} is not from {source_ip}: {seen['Iface IPaddress']}")
    if state != ["LOGGED_IN"]:
        found.append(f"the session to {iqn} is not logged in: {state}")
    if not attached_disk(block):
        found.append(f"the session to {iqn} has no attached SCSI disk")
    return found


def attached_disk(block: str) -> str:
    found = re.search(r"Attached scsi disk (\w+)", block)
    return found.group(1) if found else ""


def nfs_mounts_of(mounts: list[dict[str, str]], share: str) -> list[dict[str, str]]:
    return [m for m in mounts if m.get("SOURCE") == share and m.get("FSTYPE", "").startswith("nfs")]


def nfs_mount_problems(mounts: list[dict[str, str]], *, share: str, server_ip: str, source_ip: str) -> list[str]:
    """What is wrong with the compute's kernel NFS mount of `share` (parse_mounts of its findmnt): exactly one,
    to the server's storage address (`addr=`), and for NFSv4 from the compute's (`clientaddr=`)."""
    mine = nfs_mounts_of(mounts, share)
    if len(mine) != 1:
        return [f"expected one kernel NFS mount of {share} on the compute, saw {len(mine)}: {mounts}"]
    options = mine[0].get("OPTIONS", "")
    found = []
    if cinder_kernel_paths.mount_option(options, "addr") != server_ip:
        found.append(f"{share} is mounted from addr={cinder_kernel_paths.mount_option(options, 'addr')}, "
                     f"not {server_ip}")  # fmt: skip
    client = cinder_kernel_paths.mount_option(options, "clientaddr")
    if mine[0].get("FSTYPE") == "nfs4" and client != source_ip:
        found.append(f"{share} is mounted with clientaddr={client}, not the compute's storage address {source_ip}")
    return found


# -- on the nodes ---------------------------------------------------------------------------------------------


def first_line(runner: Runner, path: str) -> str:
    """The first line of a block device or file on the node, read with O_DIRECT (the first 4 KiB, NULs dropped)."""
    argv = ["sh", "-c", 'dd if="$1" bs=4096 count=1 iflag=direct status=none | tr -d "\\000" | head -n 1', "sh", path]
    return runner.run(argv, timeout=120.0).stdout.strip()


def clear_start(runner: Runner, path: str) -> None:
    """Zero the first 4 KiB of a new volume on its backend: cinder's lvm backend keeps `volume_clear = none` here
    (zeroing every deleted LV costs minutes under TCG), so a new LV can start with a line an earlier guest wrote on
    the extents it reuses, which the guest would take for a volume another guest wrote."""
    argv = ["dd", "if=/dev/zero", f"of={path}", "bs=4096", "count=1", "oflag=direct", "conv=notrunc", "status=none"]
    runner.run(argv, timeout=120.0)


@dataclass(frozen=True)
class KernelVolume:
    """A volume of one of the lab's lvm/nfs backends, as the backend and the compute hold it."""

    backend: str  # lvm-lioadm, lvm-tgtadm, nfs
    entry: Mapping[str, Any]  # service/cinder's kernel_backends[backend]
    volume_id: str
    node: str  # holds the bytes: the LV's storage node, the NFS server
    path: str  # the LV, or the volume file in the export directory

    @property
    def driver(self) -> str:
        return str(self.entry["driver"])

    @property
    def share(self) -> str:
        shares = [str(s) for s in self.entry["shares"]]
        return next(s for s in shares if self.path.startswith(s.partition(":")[2] + "/"))


def kernel_volume(lab: LabContext, runners: Mapping[str, Runner], backend: str, volume_id: str) -> KernelVolume:
    """Where `volume_id` of `backend` lives: the LV on cinder-volume's node, or the file on the NFS server that
    exports the share (found by its storage address) in whichever share cinder put it."""
    entry = dict((lab.outputs.get("service/cinder") or {}).get("kernel_backends", {})[backend])
    name = f"volume-{volume_id}"
    if entry["driver"] == "lvm":
        return KernelVolume(backend, entry, volume_id, str(entry["node"]), f"/dev/{entry['volume_group']}/{name}")
    for share in entry["shares"]:
        server_ip, _, export = str(share).partition(":")
        server = next(n for n in lab.nodes if "storage" in lab.nodes[n]["addresses"]
                      and lab.address(n, "storage") == server_ip)  # fmt: skip
        path = f"{export}/{name}"
        if runners[server].run(["test", "-f", path], timeout=30.0, check=False).ok:
            return KernelVolume(backend, entry, volume_id, server, path)
    raise AssertionError(f"volume-{volume_id} is in none of {backend}'s exports {entry['shares']}")


def wait_line(
    runner: Runner, path: str, until: Callable[[str], bool], *, what: str, timeout: float = 600.0
) -> str:  # fmt: skip
    """The first line of `path` on the backend once `until(line)` holds (the guest writes it through the compute)."""
    deadline = time.monotonic() + timeout
    while True:
        line = first_line(runner, path)
        if until(line) or time.monotonic() > deadline:
            assert until(line), f"{path} never showed {what} in {timeout:g}s; it starts {line!r}"
            return line
        time.sleep(3.0)


def target_iqn(node: Runner, kv: KernelVolume) -> tuple[str, list[str]]:
    """(the IQN of the target whose LUN is the volume's LV, the initiators its ACL admits: LIO only, [] on tgt)."""
    if kv.entry["target_helper"] == "lioadm":
        tpgs = [t for t in cinder_kernel_paths.lio_targets(node) if kv.path in [lun["device"] for lun in t["luns"]]]
        assert len(tpgs) == 1, f"LIO on {kv.node}: expected one target with LUN {kv.path}, saw {tpgs}"
        return str(tpgs[0]["iqn"]), [str(a["initiator"]) for a in tpgs[0]["acls"]]
    targets = [t for t in cinder_kernel_paths.tgt_targets(node).values() if kv.path in t.backing]
    assert len(targets) == 1, f"tgtd on {kv.node}: expected one target backed by {kv.path}, saw {targets}"
    return targets[0].iqn, []


def iscsi_sessions(compute: Runner) -> str:
    """`iscsiadm -m session -P 3` on the compute ("" when it has none: exit 21)."""
    return compute.run(["iscsiadm", "-m", "session", "-P", "3"], timeout=60.0, check=False).stdout


def compute_mounts(compute: Runner) -> list[dict[str, str]]:
    out = compute.run(["findmnt", "-n", "-P", "-t", "nfs,nfs4", "-o", FINDMNT_FIELDS], timeout=30.0, check=False)
    return parse_mounts(out.stdout)


def transport_problems(
    lab: LabContext, runners: Mapping[str, Runner], kv: KernelVolume, compute: str
) -> tuple[list[str], str, str]:  # fmt: skip
    """(what is wrong with the path from `compute` to the backend while the volume is attached, the proof, the
    target's IQN for an lvm volume: cinder removes the target at detach, left_on_compute looks for it by name)."""
    source_ip, node, host = lab.address(compute, "storage"), runners[kv.node], runners[compute]
    if kv.driver == "lvm":
        iqn, acl = target_iqn(node, kv)
        block = session_block(iscsi_sessions(host), iqn)
        portal = str(kv.entry["portal"])
        found = iscsi_session_problems(block, iqn=iqn, portal=portal, source_ip=source_ip)
        own = initiator_name(host.run(["cat", "/etc/iscsi/initiatorname.iscsi"], timeout=30.0).stdout)
        if kv.entry["target_helper"] == "lioadm" and own not in acl:
            found.append(f"LIO's ACL of {iqn} admits {acl}, not {compute}'s initiator {own!r}")
        proof = (f"iscsiadm -m session -P 3 on {compute}: {iqn} via {portal} from {source_ip} as {own}, LOGGED_IN, "
                 f"disk /dev/{attached_disk(block)}; target on {kv.node} ({kv.entry['target_helper']}) with LUN "
                 f"{kv.path}")  # fmt: skip
        return found, proof, iqn
    share, server_ip = kv.share, kv.share.partition(":")[0]
    mounts = compute_mounts(host)
    found = nfs_mount_problems(mounts, share=share, server_ip=server_ip, source_ip=source_ip)
    mine = nfs_mounts_of(mounts, share)
    if mine and not host.run(["test", "-f", f"{mine[0]['TARGET']}/volume-{kv.volume_id}"], timeout=30.0,
                             check=False).ok:  # fmt: skip
        found.append(f"the mount {mine[0]['TARGET']} of {share} on {compute} has no volume-{kv.volume_id}")
    proof = (f"findmnt on {compute}: {share} ({mine[0]['FSTYPE'] if mine else '-'}) at "
             f"{mine[0]['TARGET'] if mine else '-'}, addr={server_ip}, from {source_ip}; volume file {kv.path} "
             f"on {kv.node}")  # fmt: skip
    return found, proof, ""


def left_on_compute(runners: Mapping[str, Runner], kv: KernelVolume, compute: str, iqn: str) -> list[str]:
    """What os-brick's disconnect left behind for the volume on `compute`: its iSCSI session to `iqn` (lvm), its
    NFS mount (nfs)."""
    host = runners[compute]
    if kv.driver == "lvm":
        block = session_block(iscsi_sessions(host), iqn)
        return [f"the iSCSI session to {iqn} is still there on {compute}"] if block else []
    left = nfs_mounts_of(compute_mounts(host), kv.share)
    return [f"{kv.share} is still mounted at {m['TARGET']} on {compute}" for m in left]
