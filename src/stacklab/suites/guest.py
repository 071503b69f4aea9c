"""The suites' test guest in glance, and instances of it through nova.

The guest (see guest_initrd.py) is built on the controller from its own kernel and klibc, and uploaded as a
kernel and a ramdisk image plus a 1 MiB raw root disk whose properties name them, so nova boots it with direct
kernel boot under TCG in seconds and without a network. What it did shows on its disks, which the suites read
from Ceph.

The kernel and ramdisk are raw/bare images, not AKI/ARI: a live migration's destination fetches them again
(pre_live_migration, `fetch_to_raw`), and Debian's Zed nova with the image format inspector (CVE-2024-32498)
refuses an `aki` image there because qemu-img calls it `raw` ("Image content does not match disk_format"); the
boot path fetches them without that check, so either format boots.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest

from stacklab.exec.node_files import write_node_file
from stacklab.exec.runner import Runner
from stacklab.suites.context import ENV, LabContext
from stacklab.suites.openstack_calls import admin_auth, os_client, service
from stacklab.suites.storage_paths import RBD_TOOL, SCRATCH, outputs, put_private, rbd_tool

GUEST_DIR = f"{SCRATCH}/guest"
BUILDER = f"{GUEST_DIR}/guest_initrd.py"
FLAVOR = {"ram": 128, "vcpus": 1, "disk": 1}
# A guest on a VM compute runs under nested TCG here: its kernel took ~16 min to write its disk line beside four
# other TCG VMs on two cores (15 s on an LXC compute). Waits for a guest's own writes use this on VM computes, and a
# case that boots two such guests gets NESTED_CASE_TIMEOUT.
NESTED_GUEST_WAIT = 2400.0
NESTED_CASE_TIMEOUT = 7200


def on_vm_computes(lab: LabContext) -> bool:
    """True when a nova compute of the lab is a VM node (its guests run nested)."""
    computes = (lab.outputs.get("service/nova") or {}).get("computes") or []
    return any((lab.nodes.get(str(c)) or {}).get("kind") == "vm" for c in computes)


def guest_wait(lab: LabContext, default: float) -> float:
    """How long to wait for a guest's own write: `default`, or NESTED_GUEST_WAIT when the computes are VMs."""
    return max(default, NESTED_GUEST_WAIT) if on_vm_computes(lab) else default


def nested_timeout(default: int) -> pytest.MarkDecorator:
    """A suite module's per-test bound: `default`, or NESTED_CASE_TIMEOUT on VM computes (read from the lab
    context verify writes; `default` where there is none, e.g. at collection outside verify)."""
    nested = bool(os.environ.get(ENV)) and on_vm_computes(LabContext.load())
    return pytest.mark.timeout(NESTED_CASE_TIMEOUT if nested else default)


@dataclass(frozen=True)
class GuestImage:
    image_id: str
    parts: tuple[str, ...]  # every glance image made for it (kernel, ramdisk, root)
    command_line: str = ""  # the kernel command line the root image's properties give

    def boot_properties(self) -> dict[str, str]:
        """The properties that boot a raw root disk as this guest (for an image someone else uploads)."""
        kernel, ramdisk = self.parts[:2]
        return {"kernel_id": kernel, "ramdisk_id": ramdisk, "os_command_line": self.command_line}


@contextmanager
def guest_image(
    runner: Runner, auth: Mapping[str, str], *, beat: float = 0.0, net: bool = False, ssh: bool = False
) -> Iterator[GuestImage]:
    """Build and upload the guest from `runner`'s node (the controller); the images are deleted afterwards. With
    `beat` (seconds), the guest writes its console heartbeat that often; with `net`, it has a NIC: DHCP, its
    metadata and pings to the peers its user-data names (guest_initrd.py); `ssh` (implies `net`) adds dropbear,
    which lets root in with the instance's keypair (the image needs dropbear-bin and busybox-static)."""
    write_node_file(runner, BUILDER, resources.files("stacklab.suites").joinpath("guest_initrd.py").read_text())
    # a directory per guest: verify's lanes build guests on the controller at the same time
    work = f"{GUEST_DIR}/{secrets.token_hex(4)}"
    flags = ["--ssh"] if ssh else ["--net"] if net else []
    argv = ["python3", BUILDER, f"{work}/initrd{flags[0][1:] if flags else ''}.img", *flags]
    made: list[str] = []
    try:
        runner.run(["mkdir", "-p", work], timeout=30)
        built = json.loads(runner.run(argv, timeout=120).stdout.splitlines()[-1])
        root = f"{work}/root.raw"
        runner.run(["truncate", "-s", "1M", root], timeout=30)

        def upload(path: str, name: str, fmt: str, container: str, **properties: str) -> str:
            request = {**auth, "path": path, "name": name, "disk_format": fmt, "container_format": container,
                       "properties": properties}  # fmt: skip
            image = os_client(runner, "glance", "file", request)
            made.append(str(image["image_id"]))
            assert image["status"] == "active", f"glance did not take {path}: {image}"
            return str(image["image_id"])

        kernel = upload(built["kernel"], "stacklab-guest-kernel", "raw", "bare")
        ramdisk = upload(built["initrd"], "stacklab-guest-ramdisk", "raw", "bare")
        command_line = "console=ttyS0 quiet" + (f" stacklab.beat={beat:g}" if beat else "")
        image = upload(root, "stacklab-guest", "raw", "bare", kernel_id=kernel, ramdisk_id=ramdisk,
                       os_command_line=command_line)  # fmt: skip
        yield GuestImage(image, tuple(made), command_line)
    finally:
        for image_id in reversed(made):
            os_client(runner, "glance", "delete", {**auth, "image_id": image_id})
        runner.run(["rm", "-rf", "--one-file-system", work], timeout=60, check=False)


@contextmanager
def instance(runner: Runner, auth: Mapping[str, str], image: GuestImage, name: str) -> Iterator[dict[str, Any]]:
    """A booted instance of the guest (its boot result: id, status, host, fault); deleted afterwards."""
    booted = os_client(runner, "nova", "boot", {**auth, "name": name, "image_id": image.image_id, **FLAVOR})
    try:
        yield booted
    finally:
        os_client(runner, "nova", "delete", {**auth, "server_id": booted["id"]})


def ceph_admin(lab: LabContext, runners: Mapping[str, Runner]) -> Runner | None:
    """The first Ceph monitor's runner (it has the admin key), with rbd_tool.py on it; None without Ceph."""
    found = outputs(lab, "ceph")
    if found is None:
        return None
    admin = runners[str(found[1]["mons"][0])]
    put_private(admin, RBD_TOOL, resources.files("stacklab.suites").joinpath("rbd_tool.py").read_text())
    return admin


@dataclass(frozen=True)
class NovaLab:
    nova: Mapping[str, Any]  # the nova service's outputs
    admin: Runner  # the Ceph admin node, with rbd_tool.py
    controller: Runner  # where the guest is built and the APIs are called from
    auth: Mapping[str, str]


def nova_lab(lab: LabContext, runners: Mapping[str, Runner], *, disks_on_rbd: str = "") -> NovaLab:
    """What the guest suites need; skips without nova or Ceph, and with `disks_on_rbd` (the reason) also when the
    instance disks are local files."""
    nova = service(lab, "nova")
    if disks_on_rbd and nova["images_type"] != "rbd":
        pytest.skip(disks_on_rbd)
    admin = ceph_admin(lab, runners)
    if admin is None:
        assert nova["images_type"] != "rbd", "images_type rbd without a Ceph cluster in the lab"
        pytest.skip("the lab has no Ceph cluster")
    return NovaLab(nova, admin, runners[str(nova["node"])], admin_auth(lab))


def rbd_line(
    runner: Runner, pool: str, image: str, until: Callable[[str], bool], *, what: str, timeout: float = 300
) -> str:
    """The first line of RBD image `pool/image` once `until(line)` holds, read with the Ceph admin key on `runner`'s
    node (which has rbd_tool.py); the guest writes it there through QEMU's librbd."""
    deadline = time.monotonic() + timeout
    while True:
        line = rbd_tool(runner, "admin", pool, image, "line", "0").strip()
        if until(line) or time.monotonic() > deadline:
            assert until(line), f"{pool}/{image} never showed {what} in {timeout:g}s; it starts {line!r}"
            return line
        time.sleep(3.0)


# -- the path a volume's bytes take: the instance's QEMU on the compute, over br-storage, to the OSDs ------------


def qemu_pid(runner: Runner, server_id: str) -> str:
    """The pid of this instance's QEMU process on its compute node (its UUID is on QEMU's command line)."""
    listing = runner.run(["ps", "-eo", "pid=,args="], timeout=30).stdout
    pids = [line.split(None, 1)[0] for line in listing.splitlines() if "qemu-system" in line and server_id in line]
    assert len(pids) == 1, f"expected one QEMU process of instance {server_id} on its host, found {pids}"
    return pids[0]


def tcp_sockets(runner: Runner) -> str:
    """`ss -tnpH state established` on the node: every established TCP socket with its owning process."""
    return runner.run(["ss", "-tnpH", "state", "established"], timeout=30).stdout


def pid_connections(ss_text: str, pid: str) -> set[tuple[str, str]]:
    """(local, peer) address:port pairs of the established sockets process `pid` owns, from tcp_sockets()."""
    found = set()
    for line in ss_text.splitlines():
        tokens = line.split()
        users = next((i for i, t in enumerate(tokens) if t.startswith("users:")), None)
        if users is None or users < 2 or f"pid={pid}," not in tokens[users]:
            continue
        found.add((tokens[users - 2], tokens[users - 1]))
    return found


def osd_addresses(admin: Runner) -> set[str]:
    """Every address:port the cluster's OSDs serve clients on (msgr v1 and v2), from `ceph osd dump`."""
    dump = json.loads(admin.run(["ceph", "osd", "dump", "--format", "json"], timeout=60).stdout)
    return {str(a["addr"]) for osd in dump["osds"] for a in osd.get("public_addrs", {}).get("addrvec", [])}


def rbd_watchers(admin: Runner, pool: str, image: str) -> list[str]:
    """The addresses of the clients that have `pool/image` open (each librbd user of the image watches it)."""
    status = admin.run(["rbd", "--id", "admin", "status", f"{pool}/{image}", "--format", "json"], timeout=60)
    return [str(w["address"]) for w in json.loads(status.stdout).get("watchers", [])]


def host_of(address: str) -> str:
    """The IP of an `ip:port`, `ip:port/nonce` or `v2:ip:port/nonce` address."""
    bare = address.split("/", 1)[0].removeprefix("v1:").removeprefix("v2:")
    return bare.rsplit(":", 1)[0]


def volume_flow_problems(
    before: str, after: str, *, pid: str, osds: set[str], storage_ip: str, watchers: list[str]
) -> list[str]:
    """What is wrong with the claim "this QEMU process carries the attached volume's I/O to the OSDs over the
    compute's storage address" (empty: nothing). `before`/`after` are tcp_sockets() around the attach: QEMU opens
    a new librados client per RBD disk, so the volume shows as new connections of that pid to OSD addresses, from
    the storage address; Ceph lists exactly one watcher of the volume's image, at that address."""
    new = pid_connections(after, pid) - pid_connections(before, pid)
    to_osds = {(local, peer) for local, peer in new if peer in osds}
    problems = []
    if not to_osds:
        problems.append(f"QEMU (pid {pid}) opened no connection to an OSD {sorted(osds)} for the volume; its new "
                        f"connections: {sorted(new) or 'none'}")  # fmt: skip
    wrong = sorted((local, peer) for local, peer in to_osds if host_of(local) != storage_ip)
    if wrong:
        problems.append(f"QEMU's connections to the OSDs do not leave from the storage address {storage_ip}: {wrong}")
    if [host_of(w) for w in watchers] != [storage_ip]:
        problems.append(f"the volume's image is watched by {watchers or 'nobody'}, expected one client at {storage_ip}")
    return problems
