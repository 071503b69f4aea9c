"""The suites' test guest in glance, and instances of it through nova.

The guest (see guest_initrd.py) is built on the controller from its own kernel and klibc, and uploaded as an
AKI/ARI pair plus a 1 MiB raw root disk whose properties name them, so nova boots it with direct kernel boot under
TCG in seconds and without a network. Its serial console tells what it did with its disks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from stacklab.drivers.node_files import write_node_file
from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.openstack_calls import os_client
from stacklab.suites.storage_paths import RBD_TOOL, SCRATCH, outputs, put_private, rbd_tool

GUEST_DIR = f"{SCRATCH}/guest"
BUILDER = f"{GUEST_DIR}/guest_initrd.py"
FLAVOR = {"ram": 128, "vcpus": 1, "disk": 1}


@dataclass(frozen=True)
class GuestImage:
    image_id: str
    parts: tuple[str, ...]  # every glance image made for it (kernel, ramdisk, root)


@contextmanager
def guest_image(runner: Runner, auth: Mapping[str, str]) -> Iterator[GuestImage]:
    """Build and upload the guest from `runner`'s node (the controller); the images are deleted afterwards."""
    write_node_file(runner, BUILDER, resources.files("stacklab.suites").joinpath("guest_initrd.py").read_text())
    built = json.loads(runner.run(["python3", BUILDER, f"{GUEST_DIR}/initrd.img"], timeout=120).stdout.splitlines()[-1])
    root = f"{GUEST_DIR}/root.raw"
    runner.run(["truncate", "-s", "0", root], timeout=30)
    runner.run(["truncate", "-s", "1M", root], timeout=30)
    made: list[str] = []
    try:

        def upload(path: str, name: str, fmt: str, container: str, **properties: str) -> str:
            request = {**auth, "path": path, "name": name, "disk_format": fmt, "container_format": container,
                       "properties": properties}  # fmt: skip
            image = os_client(runner, "glance", "file", request)
            made.append(str(image["image_id"]))
            assert image["status"] == "active", f"glance did not take {path}: {image}"
            return str(image["image_id"])

        kernel = upload(built["kernel"], "stacklab-guest-kernel", "aki", "aki")
        ramdisk = upload(built["initrd"], "stacklab-guest-ramdisk", "ari", "ari")
        image = upload(root, "stacklab-guest", "raw", "bare", kernel_id=kernel, ramdisk_id=ramdisk,
                       os_command_line="console=ttyS0 quiet")  # fmt: skip
        yield GuestImage(image, tuple(made))
    finally:
        for image_id in reversed(made):
            os_client(runner, "glance", "delete", {**auth, "image_id": image_id})


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


def disk_line(runner: Runner, image: str, want: str, timeout: float = 300) -> str:
    """The first line of RBD image `vms/<image>` once it contains `want`, read with the Ceph admin key on `runner`'s
    node (which has rbd_tool.py); the guest writes it there through QEMU's librbd."""
    deadline = time.monotonic() + timeout
    while True:
        line = rbd_tool(runner, "admin", "vms", image, "line", "0").strip()
        if want in line or time.monotonic() > deadline:
            assert want in line, f"vms/{image} never showed {want!r} in {timeout:g}s; it starts {line!r}"
            return line
        time.sleep(3.0)


def console_shows(runner: Runner, auth: Mapping[str, str], server_id: str, want: str, timeout: float = 300) -> str:
    """The console log once it contains `want` (assertion error with the log otherwise)."""
    seen = os_client(runner, "nova", "console", {**auth, "server_id": server_id, "want": want, "timeout": timeout})
    assert seen["found"], f"the guest's console never showed {want!r} in {timeout:g}s; it shows:\n{seen['log']}"
    return str(seen["log"])
