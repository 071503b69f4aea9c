"""Suite `evacuation`: a compute host dies, and its instance comes back on another host with its disk intact on
shared storage (RBD).

The suites' guest boots through nova and marks its root disk (`stacklab-disk:<first boot id> boot:<boot id>`).
Then its host dies as far as the cloud can tell: nova-compute stops there and the instance's QEMU process is
killed (the lab's compute nodes are containers; the host itself stays up so that `down` can clean it). The host
is marked forced-down through nova's API (what a fencing agent does) and the instance evacuated. It must come back
ACTIVE on another compute, and its disk, read from Ceph, must carry the same mark with a new boot id: the same
disk, used by a new boot. Afterwards the dead host's nova-compute is started and un-forced again.
"""

from __future__ import annotations

import pytest

from stacklab.drivers.node_files import systemctl
from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.guest import guest_image, instance, nova_lab, rbd_line
from stacklab.suites.openstack_calls import os_client


def kill_instance_qemu(runner: Runner, server_id: str) -> None:
    """SIGKILL the QEMU process of this instance only (found by its UUID in the command line)."""
    listing = runner.run(["ps", "-eo", "pid=,args="], timeout=30).stdout
    pids = [line.split(None, 1)[0] for line in listing.splitlines() if "qemu-system" in line and server_id in line]
    assert pids, f"no QEMU process of instance {server_id} on its host"
    runner.run(["kill", "-9", *pids], timeout=30)


def test_instance_survives_its_host_on_shared_storage(lab: LabContext, runners: dict[str, Runner]) -> None:
    nl = nova_lab(lab, runners, disks_on_rbd="evacuation with the disk intact needs shared storage (images_type rbd)")
    nova, admin, controller, auth = nl.nova, nl.admin, nl.controller, nl.auth
    if len(nova["computes"]) < 2:
        pytest.skip("evacuation needs a second compute node")
    with guest_image(controller, auth) as image, instance(controller, auth, image, "stacklab-suite-evac") as booted:
        assert booted["status"] == "ACTIVE", f"the guest did not become ACTIVE: {booted}"
        dead = str(booted["host"])
        disk = f"{booted['id']}_disk"
        first = rbd_line(admin, "vms", disk, lambda text: " boot:" in text, what="' boot:'")
        mark, first_boot = first.split()
        dead_runner = runners[dead]
        systemctl(dead_runner, "stop", "nova-compute")
        try:
            kill_instance_qemu(dead_runner, str(booted["id"]))
            moved = os_client(controller, "nova", "evacuate", {**auth, "server_id": booted["id"], "host": dead})
            assert moved["status"] == "ACTIVE", f"the evacuated instance is {moved}"
            assert moved["host"] != dead and moved["host"] in nova["computes"], f"{moved} (dead host: {dead})"
            line = rbd_line(admin, "vms", disk, lambda text: text.split()[-1:] != [first_boot], what="a new boot id")
            kept, new_boot = line.split()
            assert kept == mark, f"the disk lost its mark: {mark!r} before, {kept!r} after the evacuation"
            assert new_boot != first_boot, f"no new boot used the disk on {moved['host']}: {line!r}"
        finally:
            systemctl(dead_runner, "start", "nova-compute")
            os_client(controller, "nova", "undown", {**auth, "host": dead})
