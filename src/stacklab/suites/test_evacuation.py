"""Suite `evacuation`: a compute host dies, and its instance comes back on another host with its disk intact on
shared storage (RBD, or with nova's instances_on nfs the disk file on the NFS export: instance_disks.py).

The suites' guest boots through nova and marks its root disk (`stacklab-disk:<first boot id> boot:<boot id>`).
Then its host dies as far as the cloud can tell: nova-compute stops there and the instance's QEMU process is
killed (the lab's compute nodes are containers; the host itself stays up so that `down` can clean it). The host
is marked forced-down through nova's API (what a fencing agent does) and the instance evacuated. It must come back
ACTIVE on another compute, and its disk, read from Ceph (or on the NFS server, where it must be the same file,
same inode), must carry the same mark with a new boot id: the same disk, used by a new boot. Then the host comes
back as an operator brings it back: nova-compute starts there, destroys its stale copy of the evacuated instance
and closes the evacuation (migration `completed`); only then does nova accept the un-force (while the migration is
`done` it answers HTTP 400), and the answer is checked. The suite ends with every compute of the lab up and
enabled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from stacklab.exec.node_files import systemctl, unit_active
from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.guest import guest_image, instance, nested_timeout
from stacklab.suites.instance_disks import shared_nova_lab
from stacklab.suites.openstack_calls import os_client

# on VM computes the guests run under nested TCG: minutes per boot (guest.NESTED_CASE_TIMEOUT)
pytestmark = nested_timeout(900)


def kill_instance_qemu(runner: Runner, server_id: str) -> None:
    """SIGKILL the QEMU process of this instance only (found by its UUID in the command line)."""
    listing = runner.run(["ps", "-eo", "pid=,args="], timeout=30).stdout
    pids = [line.split(None, 1)[0] for line in listing.splitlines() if "qemu-system" in line and server_id in line]
    assert pids, f"no QEMU process of instance {server_id} on its host"
    runner.run(["kill", "-9", *pids], timeout=30)


RETURN_BUDGET = 240.0  # nova-compute's start on a TCG lab node, its cleanup, then a service report


def wait_for(what: str, probe: Any, budget: float = RETURN_BUDGET) -> Any:
    """probe() until it returns something true; fails with `what` and the last answer after `budget` seconds."""
    deadline = time.monotonic() + budget
    while not (seen := probe()):
        assert time.monotonic() < deadline, f"{what} not within {budget:g}s"
        time.sleep(3.0)
    return seen


def computes_not_serving(services: list[Mapping[str, Any]], computes: list[str]) -> list[str]:
    """The lab's computes that nova does not show up, enabled and not forced down (with what it shows)."""
    by_host = {str(s["host"]): s for s in services}
    bad = []
    for host in computes:
        svc = by_host.get(host)
        if svc is None or (svc["state"], svc["status"], svc["forced_down"]) != ("up", "enabled", False):
            bad.append(f"{host}: {svc or 'no nova-compute service'}")
    return bad


def evacuation_closed(controller: Runner, auth: Mapping[str, str], host: str, server_id: str) -> bool:
    """Whether nova-compute on `host` cleaned up after the evacuation away from it (migration `completed`)."""
    found = os_client(controller, "nova", "migrations", {**auth, "server_id": server_id})["migrations"]
    evacuations = [m for m in found if m["migration_type"] == "evacuation" and m["source_compute"] == host]
    return bool(evacuations) and all(m["status"] == "completed" for m in evacuations)


def bring_back(controller: Runner, auth: Mapping[str, str], runner: Runner, host: str, server_id: str) -> None:
    """What an operator does once the dead host is repaired: start nova-compute, which at its start destroys the
    instance nova evacuated away and marks the evacuation `completed`; then clear the forced-down mark."""
    systemctl(runner, "start", "nova-compute")
    wait_for(f"the evacuation from {host} to be completed by its nova-compute",
             lambda: evacuation_closed(controller, auth, host, server_id))  # fmt: skip
    undown = os_client(controller, "nova", "undown", {**auth, "host": host})
    assert undown["http"] == 200, f"nova refused to un-force {host}: HTTP {undown['http']}: {undown['answer']}"
    assert undown["answer"]["service"]["forced_down"] is False, undown


def restore(controller: Runner, auth: Mapping[str, str], runner: Runner, host: str, server_id: str) -> None:
    """After a failure half-way: the same steps as bring_back, best effort (the test's own error is the report)."""
    if unit_down(runner):
        systemctl(runner, "start", "nova-compute", check=False)
    deadline = time.monotonic() + RETURN_BUDGET
    while not evacuation_closed(controller, auth, host, server_id) and time.monotonic() < deadline:
        time.sleep(3.0)
    os_client(controller, "nova", "undown", {**auth, "host": host})


def test_instance_survives_its_host_on_shared_storage(lab: LabContext, runners: dict[str, Runner]) -> None:
    why = "evacuation with the disk intact needs shared storage (images_type rbd, or instances_on nfs)"
    nl, disks = shared_nova_lab(lab, runners, why=why)
    nova, controller, auth = nl.nova, nl.controller, nl.auth
    if len(nova["computes"]) < 2:
        pytest.skip("evacuation needs a second compute node")
    with guest_image(controller, auth) as image, instance(controller, auth, image, "stacklab-suite-evac") as booted:
        assert booted["status"] == "ACTIVE", f"the guest did not become ACTIVE: {booted}"
        dead = str(booted["host"])
        server_id = str(booted["id"])
        first = disks.line(server_id, lambda text: " boot:" in text, what="' boot:'")
        disk_file = disks.identity(server_id)  # nfs: the disk file's device:inode on the server
        mark, first_boot = first.split()
        dead_runner = runners[dead]
        systemctl(dead_runner, "stop", "nova-compute")
        try:
            kill_instance_qemu(dead_runner, str(booted["id"]))
            moved = os_client(controller, "nova", "evacuate", {**auth, "server_id": booted["id"], "host": dead})
            assert moved["status"] == "ACTIVE", f"the evacuated instance is {moved}"
            assert moved["host"] != dead and moved["host"] in nova["computes"], f"{moved} (dead host: {dead})"
            line = disks.line(server_id, lambda text: text.split()[-1:] != [first_boot], what="a new boot id")
            kept, new_boot = line.split()
            assert kept == mark, f"the disk lost its mark: {mark!r} before, {kept!r} after the evacuation"
            assert new_boot != first_boot, f"no new boot used the disk on {moved['host']}: {line!r}"
            assert disks.identity(server_id) == disk_file, (
                f"{disks.where(server_id)} is another file after the evacuation: nova did not reuse the shared disk"
            )
            mounts, _seen = disks.mount_problems(runners, (dead, str(moved["host"])))
            assert not mounts, "; ".join(mounts)
            bring_back(controller, auth, dead_runner, dead, str(booted["id"]))
            # the returning host destroys its copy of the guest, not the shared disk the guest now runs from
            assert disks.identity(server_id) == disk_file, f"{disks.where(server_id)} changed when {dead} came back"
            domains = dead_runner.run(["virsh", "list", "--all", "--uuid"], timeout=60).stdout.split()
            assert str(booted["id"]) not in domains, f"{dead} still defines the evacuated instance's domain"
        finally:
            if unit_down(dead_runner) or dead in forced_down(controller, auth):
                restore(controller, auth, dead_runner, dead, str(booted["id"]))
    computes, left = [str(c) for c in nova["computes"]], ["not asked yet"]
    deadline = time.monotonic() + 120.0  # a compute just un-forced shows up at its next report (10 s)
    while left and time.monotonic() < deadline:
        left = computes_not_serving(services(controller, auth), computes)
        time.sleep(0 if not left else 3.0)
    assert not left, f"the suite leaves computes that do not serve: {left}"


def services(controller: Runner, auth: Mapping[str, str]) -> list[Mapping[str, Any]]:
    return list(os_client(controller, "nova", "services", dict(auth))["services"])


def forced_down(controller: Runner, auth: Mapping[str, str]) -> list[str]:
    return [str(s["host"]) for s in services(controller, auth) if s["forced_down"]]


def unit_down(runner: Runner) -> bool:
    return not unit_active(runner, "nova-compute")
