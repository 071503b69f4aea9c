"""Suite `attach`: a cinder volume goes through a volume's life with nova, and its bytes live on the lab's Ceph.

The suites' guest (guest_initrd.py) boots through nova. A 1 GiB volume made through cinder's API is attached
through nova's (`os-volume_attachments`: nova asks cinder for the connection, libvirt hot-plugs the RBD disk with
the lab's secret); the guest finds the new disk (/dev/vdb) and writes `stacklab-volume:vdb:<its boot id>` at its
start, and the Ceph admin reads that line from `volumes/volume-<id>`. The path is the flow itself: the instance's
QEMU process opened new connections to the OSDs from the compute's storage address, and Ceph lists that address
as the only client of the image. Then the volume is detached through nova (server remove volume: nova-compute
unplugs it and deletes the attachment in cinder with its service token) and is `available` with the line intact
on Ceph; attached to a second guest, that guest reads the line and writes it back after its own
(`stacklab-volume:vdb:<its boot id> read:<the first guest's line>`). Deleting that server with the volume attached
leaves the volume `available` (nova detaches it). Cleanup happens through the APIs, even when the test fails.
Every cinder backend the lab has gets this run (RBD is the one wired today).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.guest import (
    GuestImage,
    NovaLab,
    guest_image,
    nova_lab,
    osd_addresses,
    qemu_pid,
    rbd_line,
    rbd_watchers,
    tcp_sockets,
    volume_flow_problems,
)
from stacklab.suites.openstack_calls import os_client, service

# nova detaching through cinder takes seconds once the service token is sent; without it the volume stayed in-use
DETACH_BUDGET = 60.0
# what the guest writes on a volume it finds (guest_initrd.py): usually vdb, another name when the volume was
# probed before the root disk; a root disk's `stacklab-disk:` mark here means the guest took the volume for its root
VOLUME_LINE = re.compile(r"stacklab-volume:vd[a-z]:")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        from stacklab.suites.context import LabContext as Ctx

        outputs = Ctx.load().outputs.get("service/cinder") or {}
        backends = [str(b) for b in outputs.get("backends", [])]
        marks = [] if backends else [pytest.mark.skip(reason="the lab has no cinder service")]
        metafunc.parametrize("backend", backends or [pytest.param("-", marks=marks)])


def volume_state(nl: NovaLab, volume_id: str) -> dict[str, Any]:
    return os_client(nl.controller, "cinder", "show", {**nl.auth, "volume_id": volume_id})


def wait_available(nl: NovaLab, volume_id: str, budget: float = DETACH_BUDGET) -> dict[str, Any]:
    """The volume once cinder shows it available (or as it is when the budget ends)."""
    import time

    deadline = time.monotonic() + budget
    while (shown := volume_state(nl, volume_id))["status"] != "available" and time.monotonic() < deadline:
        time.sleep(2.0)
    return shown


@pytest.fixture
def volume(lab: LabContext, runners: dict[str, Runner], backend: str) -> Iterator[tuple[NovaLab, dict[str, Any]]]:
    """A 1 GiB volume of `backend`; deleted afterwards (detached through cinder first only if a failed test left
    it attached, so the lab is left clean either way)."""
    nl = nova_lab(lab, runners)
    assert backend == "rbd", f"cinder backend {backend}: the attach suite reads volumes back from RBD only"
    made = os_client(nl.controller, "cinder", "create", {**nl.auth, "size_gb": 1, "name": "stacklab-suite-attach"})
    yield nl, made
    shown = volume_state(nl, made["id"])
    for attachment in shown.get("attachments") or []:
        os_client(nl.controller, "cinder", "detach", {**nl.auth, "volume_id": made["id"],
                                                      "attachment_id": attachment["attachment_id"]})  # fmt: skip
    if shown.get("http") == 200:
        os_client(nl.controller, "cinder", "delete", {**nl.auth, "volume_id": made["id"]})


def boot(nl: NovaLab, image: GuestImage, name: str, made: list[str]) -> dict[str, Any]:
    booted = os_client(nl.controller, "nova", "boot", {**nl.auth, "name": name, "image_id": image.image_id,
                                                        "ram": 128, "vcpus": 1, "disk": 1})  # fmt: skip
    made.append(str(booted["id"]))
    assert booted["status"] == "ACTIVE", f"the guest did not become ACTIVE: {booted}"
    return booted


def test_volume_moves_between_guests_through_nova_with_its_bytes_on_ceph(
    lab: LabContext, runners: dict[str, Runner], volume: tuple[NovaLab, dict[str, Any]]
) -> None:
    nl, vol = volume
    cinder, auth, controller = service(lab, "cinder"), nl.auth, nl.controller
    pool, image_name = str(cinder["ceph_pool"]), f"volume-{vol['id']}"
    servers: list[str] = []
    with guest_image(controller, auth) as image:
        try:
            first = boot(nl, image, "stacklab-suite-attach", servers)
            host = str(first["host"])
            pid = qemu_pid(runners[host], str(first["id"]))
            before = tcp_sockets(runners[host])
            attached = os_client(controller, "nova", "attach", {**auth, "server_id": first["id"],
                                                                "volume_id": vol["id"]})  # fmt: skip
            what = f"the guest's line (nova attached the volume as {attached.get('device')})"
            line = rbd_line(nl.admin, pool, image_name, lambda text: "stacklab-volume:" in text, what=what)
            assert VOLUME_LINE.match(line) and " read:" not in line, (
                f"{pool}/{image_name} starts {line!r}, expected the guest's `stacklab-volume:vdX:<boot id>` line"
            )
            problems = volume_flow_problems(
                before, tcp_sockets(runners[host]), pid=pid, osds=osd_addresses(nl.admin),
                storage_ip=lab.address(host, "storage"), watchers=rbd_watchers(nl.admin, pool, image_name),
            )  # fmt: skip
            assert not problems, "; ".join(problems)
            shown = volume_state(nl, vol["id"])
            assert shown["status"] == "in-use" and [a["server_id"] for a in shown["attachments"]] == [first["id"]]

            detached = os_client(controller, "nova", "detach", {**auth, "server_id": first["id"],
                                                                "volume_id": vol["id"]})  # fmt: skip
            assert detached["status"] == "available" and not detached["attachments"], detached
            assert detached["seconds"] < DETACH_BUDGET, f"nova's detach took {detached['seconds']}s"
            assert rbd_watchers(nl.admin, pool, image_name) == [], "QEMU still has the detached volume open"
            kept = rbd_line(nl.admin, pool, image_name, lambda text: True, what="the line")
            assert kept == line, f"detached, {pool}/{image_name} starts {kept!r}; the guest wrote {line!r}"

            second = boot(nl, image, "stacklab-suite-attach-2", servers)
            os_client(controller, "nova", "attach", {**auth, "server_id": second["id"], "volume_id": vol["id"]})
            again = rbd_line(nl.admin, pool, image_name, lambda text: text != line, what="the second guest's line")
            written, _, seen = again.partition(" read:")
            assert VOLUME_LINE.match(written) and written != line.split()[0], again
            assert seen == line, f"the second guest read {seen!r} from the volume, the first one wrote {line!r}"

            gone = os_client(controller, "nova", "delete", {**auth, "server_id": second["id"]})
            servers.remove(str(second["id"]))
            assert gone["status"] == "gone", gone
            shown = wait_available(nl, vol["id"])
            assert shown["status"] == "available" and not shown["attachments"], (
                f"deleting a server with the volume attached left it {shown['status']}: {shown['attachments']}"
            )
        finally:
            for server_id in servers:
                os_client(controller, "nova", "delete", {**auth, "server_id": server_id})
