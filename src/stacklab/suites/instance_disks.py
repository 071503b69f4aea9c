"""Where the guest suites read an instance's root disk back: on the shared storage that holds it, not through the
compute that runs the guest.

- images_type rbd: the RBD image `vms/<id>_disk`, read with the Ceph admin key on the first monitor (rbd_line).
- instances_on nfs: the instance's disk file `<export>/<id>/disk` on the NFS server node itself, read with qemu-img
  from the export's directory (not through a compute's mount). The file is a qcow2 overlay whose backing file path
  (`/var/lib/nova/instances/_base/...`) is the computes' path, not the server's: it is opened with no backing file
  (`"backing": null`), so what is read is what the guest wrote into its own file (its first cluster, where its
  line is); an unwritten cluster reads as zeros. `-U`: QEMU on the compute holds the image's lock.

For nfs the suites also prove the transport: every compute has the export mounted at instances_path from the NFS
server's br-storage address (findmnt), and the disk file keeps its inode across a live migration and an evacuation
(nova found the storage shared and moved no disk).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pytest

from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.guest import NovaLab, guest_wait, nova_lab, rbd_line
from stacklab.suites.openstack_calls import admin_auth, service
from stacklab.suites.storage_paths import SCRATCH

READ_BYTES = 4096  # the guest's line is at the start of its root disk (guest_initrd.py)


@dataclass(frozen=True)
class InstanceDisks:
    kind: str  # rbd | nfs
    reader: Runner  # the Ceph admin node (rbd) or the NFS server node (nfs)
    server: str = ""  # nfs: the NFS server node
    export_path: str = ""  # nfs: the export's directory on the server
    share: str = ""  # nfs: what every compute mounts at instances_path (<server storage address>:<path>)
    instances_path: str = ""
    scratch: str = SCRATCH  # on the reader: where the head of a disk is copied to be read
    wait: float = 300.0  # how long a guest may take to write its line (guest_wait: longer on VM computes)

    def where(self, server_id: str) -> str:
        if self.kind == "nfs":
            return f"{self.server}:{self.export_path}/{server_id}/disk"
        return f"vms/{server_id}_disk"

    def first_line(self, server_id: str) -> str:
        """The first line of the instance's root disk as stored on the shared storage."""
        if self.kind != "nfs":
            return ""
        disk, out = f"{self.export_path}/{server_id}/disk", f"{self.scratch}/disk-{server_id}.head"
        fmt = self.reader.run(["qemu-img", "info", "-U", "--output=json", disk], timeout=60, check=False)
        if not fmt.ok:
            return ""  # not there yet (nova still creating it)
        spec = {"driver": json.loads(fmt.stdout)["format"], "file": {"driver": "file", "filename": disk}}
        if spec["driver"] == "qcow2":
            spec["backing"] = None
        self.reader.run(["mkdir", "-p", self.scratch], timeout=30)
        self.reader.run(["qemu-img", "dd", "-U", "-O", "raw", f"if=json:{json.dumps(spec)}", f"of={out}",
                         f"bs={READ_BYTES}", "count=1"], timeout=120)  # fmt: skip
        head = self.reader.run(["head", "-n", "1", out], timeout=30).stdout
        self.reader.run(["rm", "-f", out], timeout=30, check=False)
        return head.replace("\0", "").strip()

    def line(self, server_id: str, until: Callable[[str], bool], *, what: str, timeout: float | None = None) -> str:
        """The first line of the instance's root disk once `until(line)` holds (within `timeout`, else self.wait)."""
        timeout = self.wait if timeout is None else timeout
        if self.kind != "nfs":
            return rbd_line(self.reader, "vms", f"{server_id}_disk", until, what=what, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            line = self.first_line(server_id)
            if until(line) or time.monotonic() > deadline:
                assert until(line), f"{self.where(server_id)} never showed {what} in {timeout:g}s; it starts {line!r}"
                return line
            time.sleep(3.0)

    def identity(self, server_id: str) -> str:
        """nfs: the disk file's inode and device on the server (the same file before and after a move); rbd: ''."""
        if self.kind != "nfs":
            return ""
        disk = f"{self.export_path}/{server_id}/disk"
        found = self.reader.run(["stat", "-c", "%d:%i", disk], timeout=30, check=False)
        assert found.ok, f"{self.server} has no {disk}: nova did not put the instance's disk on the export"
        return found.stdout.strip()

    def mount_problems(self, runners: Mapping[str, Runner], computes: Iterable[str]) -> tuple[list[str], str]:
        """nfs: what is wrong with "every compute has the share mounted at instances_path over NFS, from the
        server's br-storage address" (empty: nothing), and what was seen; rbd: nothing to check."""
        if self.kind != "nfs":
            return [], ""
        address = self.share.rsplit(":", 1)[0]
        problems, seen = [], []
        for node in computes:
            result = runners[node].run(["findmnt", "-J", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--mountpoint",
                                        self.instances_path], timeout=30, check=False)  # fmt: skip
            mounts = json.loads(result.stdout or "{}").get("filesystems", []) if result.ok else []
            if not mounts:
                problems.append(f"nothing is mounted at {self.instances_path} on {node}")
                continue
            mount = mounts[-1]
            options = dict(o.split("=", 1) for o in str(mount["options"]).split(",") if "=" in o)
            if mount["source"] != self.share or not str(mount["fstype"]).startswith("nfs"):
                problems.append(f"{self.instances_path} on {node} is {mount['fstype']} from {mount['source']}, "
                                f"not NFS from {self.share}")  # fmt: skip
            elif options.get("addr") != address:
                problems.append(f"{node} reaches {self.share} at {options.get('addr')}, not at {address}")
            seen.append(f"{node}: {mount['source']} {mount['fstype']} addr={options.get('addr')}")
        return problems, "; ".join(seen)


def shared_nova_lab(lab: LabContext, runners: Mapping[str, Runner], *, why: str) -> tuple[NovaLab, InstanceDisks]:
    """What a suite on shared instance disks needs: nova_lab() for RBD disks (skips without them, `why`), or with
    instances_on nfs the NFS server as the node that reads the disks back (no Ceph needed)."""
    nova = service(lab, "nova")
    if nova.get("instances_on") != "nfs":
        found = nova_lab(lab, runners, disks_on_rbd=why)
        return found, InstanceDisks("rbd", found.admin, wait=guest_wait(lab, 300.0))
    server = str(nova["instances_server"])
    if server not in runners:
        pytest.fail(f"nova's NFS server {server} is not a node of the lab")
    disks = InstanceDisks("nfs", runners[server], server, str(nova["instances_export_path"]),
                          str(nova["instances_share"]), str(nova["instances_path"]),
                          wait=guest_wait(lab, 300.0))  # fmt: skip
    return NovaLab(nova, runners[server], runners[str(nova["node"])], admin_auth(lab)), disks
