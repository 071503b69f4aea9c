"""Suite `attach`: a cinder volume goes through a volume's life with nova, and its bytes live on its backend.

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

Every cinder backend the lab has gets this run. On the kernel backends (lvm with LIO or tgt, nfs: a VM compute,
os-brick on its own kernel) the line is read back on the backend itself, the LV `/dev/<vg>/volume-<id>` on the
storage node or the volume file in the NFS server's export directory, and the transport is proven on the compute
while attached: os-brick's iSCSI session from the compute's br-storage address to the backend's portal (3260 LIO,
3261 tgt beside it), or its kernel NFS mount of the share from the server's storage address (attach_backends.py).
After each detach (through nova, and by deleting the server) neither is left on the compute.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from stacklab.exec.runner import Runner
from stacklab.suites import attach_backends
from stacklab.suites.attach_backends import KERNEL_WAIT, KernelVolume
from stacklab.suites.context import LabContext
from stacklab.suites.guest import (
    NESTED_CASE_TIMEOUT,
    GuestImage,
    NovaLab,
    guest_image,
    guest_wait,
    nova_lab,
    osd_addresses,
    qemu_pid,
    rbd_line,
    rbd_watchers,
    tcp_sockets,
    volume_flow_problems,
)
from stacklab.suites.lab_fixtures import Evidence
from stacklab.suites.openstack_calls import admin_auth, os_client, service

# nova detaching through cinder takes seconds once the service token is sent; without it the volume stayed in-use
DETACH_BUDGET = 60.0
# what the guest writes on a volume it finds (guest_initrd.py): usually vdb, another name when the volume was
# probed before the root disk; a root disk's `stacklab-disk:` mark here means the guest took the volume for its root
VOLUME_LINE = re.compile(r"stacklab-volume:vd[a-z]:")
# A kernel backend's case boots two guests under nested TCG on a VM compute and waits on a cinder-volume in a TCG
# VM: in the reference lab the whole lvm-lioadm case took 34 min and lvm-tgtadm's second guest had not written
# its line after 15 min (five TCG VMs on two cores). Those cases get guest.NESTED_CASE_TIMEOUT, still finite so
# that a hang fails, and guest_wait() for each guest's line.


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        from stacklab.suites.context import LabContext as Ctx

        outputs = Ctx.load().outputs.get("service/cinder") or {}
        backends = [str(b) for b in outputs.get("backends", [])]
        marks = [] if backends else [pytest.mark.skip(reason="the lab has no cinder service")]
        params = [
            pytest.param(b, marks=[] if b == "rbd" else [pytest.mark.timeout(NESTED_CASE_TIMEOUT)]) for b in backends
        ]
        metafunc.parametrize("backend", params or [pytest.param("-", marks=marks)])


@dataclass(frozen=True)
class Attach:
    """Where the suite calls the APIs from, and how long a volume of the backend may take."""

    controller: Runner
    auth: Mapping[str, str]
    wait: float  # 0: os_client's own waits (rbd); a kernel backend's cinder-volume in a TCG VM needs more
    nl: NovaLab | None  # rbd: the Ceph admin and nova's outputs


def call(at: Attach, service_name: str, action: str, request: Mapping[str, Any]) -> dict[str, Any]:
    if not at.wait:
        return os_client(at.controller, service_name, action, {**at.auth, **request})
    return attach_backends.os_call(at.controller, service_name, action, {**at.auth, **request}, wait=at.wait)


def volume_state(at: Attach, volume_id: str) -> dict[str, Any]:
    return call(at, "cinder", "show", {"volume_id": volume_id})


def wait_available(at: Attach, volume_id: str, budget: float = DETACH_BUDGET) -> dict[str, Any]:
    """The volume once cinder shows it available (or as it is when the budget ends)."""
    import time

    deadline = time.monotonic() + max(budget, at.wait)
    while (shown := volume_state(at, volume_id))["status"] != "available" and time.monotonic() < deadline:
        time.sleep(2.0)
    return shown


@pytest.fixture
def volume(lab: LabContext, runners: dict[str, Runner], backend: str) -> Iterator[tuple[Attach, dict[str, Any]]]:
    """A 1 GiB volume of `backend`; deleted afterwards (detached through cinder first only if a failed test left
    it attached, so the lab is left clean either way)."""
    request: dict[str, Any] = {"size_gb": 1, "name": "stacklab-suite-attach"}
    if backend == "rbd":
        nl = nova_lab(lab, runners)
        at = Attach(nl.controller, nl.auth, 0.0, nl)
        if service(lab, "cinder").get("kernel_backends"):  # a mixed lab's default type is its first backend's
            request["volume_type"] = "rbd"
    else:
        kernel = dict(service(lab, "cinder").get("kernel_backends") or {})
        assert backend in kernel, f"cinder backend {backend}: neither rbd nor one of the lab's lvm/nfs backends"
        nova = service(lab, "nova")
        at = Attach(runners[str(nova["node"])], admin_auth(lab), KERNEL_WAIT, None)
        request["volume_type"] = kernel[backend]["volume_type"]
    made = call(at, "cinder", "create", request)
    yield at, made
    shown = volume_state(at, made["id"])
    for attachment in shown.get("attachments") or []:
        call(at, "cinder", "detach", {"volume_id": made["id"], "attachment_id": attachment["attachment_id"]})
    if shown.get("http") == 200:
        call(at, "cinder", "delete", {"volume_id": made["id"]})


def boot(at: Attach, image: GuestImage, name: str, made: list[str]) -> dict[str, Any]:
    booted = call(at, "nova", "boot", {"name": name, "image_id": image.image_id, "ram": 128, "vcpus": 1, "disk": 1})
    made.append(str(booted["id"]))
    assert booted["status"] == "ACTIVE", f"the guest did not become ACTIVE: {booted}"
    return booted


def test_volume_moves_between_guests_through_nova_with_its_bytes_on_its_backend(
    lab: LabContext,
    runners: dict[str, Runner],
    backend: str,
    volume: tuple[Attach, dict[str, Any]],
    evidence: Evidence,
) -> None:
    at, vol = volume
    auth, controller, vid = at.auth, at.controller, str(vol["id"])
    servers: list[str] = []
    kv: KernelVolume | None = None
    if at.nl is None:
        kv = attach_backends.kernel_volume(lab, runners, backend, vid)
        attach_backends.clear_start(runners[kv.node], kv.path)
        where = f"{kv.path} on {kv.node}"
        evidence("volume", f"{backend}: {where} (cinder host {vol['host']})")

        def read_line(until: Callable[[str], bool], what: str) -> str:
            assert kv is not None
            return attach_backends.wait_line(
                runners[kv.node], kv.path, until, what=what, timeout=guest_wait(lab, KERNEL_WAIT)
            )
    else:
        nl, pool = at.nl, str(service(lab, "cinder")["ceph_pool"])
        image_name = f"volume-{vid}"
        where = f"{pool}/{image_name}"

        def read_line(until: Callable[[str], bool], what: str) -> str:
            return rbd_line(nl.admin, pool, image_name, until, what=what)

    with guest_image(controller, auth) as image:
        try:
            first = boot(at, image, "stacklab-suite-attach", servers)
            host = str(first["host"])
            if at.nl is not None:
                pid = qemu_pid(runners[host], str(first["id"]))
                before = tcp_sockets(runners[host])
            attached = call(at, "nova", "attach", {"server_id": first["id"], "volume_id": vid})
            what = f"the guest's line (nova attached the volume as {attached.get('device')})"
            line = read_line(lambda text: "stacklab-volume:" in text, what)
            assert VOLUME_LINE.match(line) and " read:" not in line, (
                f"{where} starts {line!r}, expected the guest's `stacklab-volume:vdX:<boot id>` line"
            )
            iqn = ""
            if at.nl is not None:
                nl = at.nl
                problems = volume_flow_problems(
                    before, tcp_sockets(runners[host]), pid=pid, osds=osd_addresses(nl.admin),
                    storage_ip=lab.address(host, "storage"), watchers=rbd_watchers(nl.admin, pool, image_name),
                )  # fmt: skip
            else:
                assert kv is not None
                problems, proof, iqn = attach_backends.transport_problems(lab, runners, kv, host)
                evidence("transport", proof)
            assert not problems, "; ".join(problems)
            evidence("read back", f"{where}: {line!r}")
            shown = volume_state(at, vid)
            assert shown["status"] == "in-use" and [a["server_id"] for a in shown["attachments"]] == [first["id"]]

            detached = call(at, "nova", "detach", {"server_id": first["id"], "volume_id": vid})
            assert detached["status"] == "available" and not detached["attachments"], detached
            assert detached["seconds"] < max(DETACH_BUDGET, at.wait), f"nova's detach took {detached['seconds']}s"
            if at.nl is not None:
                assert rbd_watchers(at.nl.admin, pool, image_name) == [], "QEMU still has the detached volume open"
            else:
                assert kv is not None
                left = attach_backends.left_on_compute(runners, kv, host, iqn)
                assert not left, "os-brick's disconnect left " + "; ".join(left)
                evidence("detached", f"{detached['seconds']} s; no session or mount of the volume on {host}")
            kept = read_line(lambda text: True, "the line")
            assert kept == line, f"detached, {where} starts {kept!r}; the guest wrote {line!r}"

            second = boot(at, image, "stacklab-suite-attach-2", servers)
            call(at, "nova", "attach", {"server_id": second["id"], "volume_id": vid})
            again = read_line(lambda text: text != line, "the second guest's line")
            written, _, seen = again.partition(" read:")
            assert VOLUME_LINE.match(written) and written != line.split()[0], again
            assert seen == line, f"the second guest read {seen!r} from the volume, the first one wrote {line!r}"

            gone = call(at, "nova", "delete", {"server_id": second["id"]})
            servers.remove(str(second["id"]))
            assert gone["status"] == "gone", gone
            shown = wait_available(at, vid)
            assert shown["status"] == "available" and not shown["attachments"], (
                f"deleting a server with the volume attached left it {shown['status']}: {shown['attachments']}"
            )
            if kv is not None:
                second_host = str(second["host"])
                second_iqn = iqn if second_host == host else ""
                left = attach_backends.left_on_compute(runners, kv, second_host, second_iqn)
                assert not left, "deleting the server, os-brick's disconnect left " + "; ".join(left)
        finally:
            for server_id in servers:
                call(at, "nova", "delete", {"server_id": server_id})
