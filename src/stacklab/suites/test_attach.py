"""Suite `attach`: a cinder volume attached by nova to a running instance is seen and written by the guest, and the
bytes land in the volume's RBD image on the lab's Ceph.

The suites' guest (guest_initrd.py) boots through nova; a 1 GiB volume is made through cinder's API and attached
through nova's (`os-volume_attachments`: nova asks cinder for the connection, libvirt hot-plugs the RBD disk with
the lab's secret); the guest finds the new disk (/dev/vdb) and writes `stacklab-volume:vdb:<its boot id>` at its
start; the Ceph admin reads that line from `volumes/volume-<id>`, and the compute node's br-storage interface
carried the I/O. Detach and delete happen through the APIs afterwards, even when the test fails.
"""

from __future__ import annotations

from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.guest import guest_image, instance, nova_lab, rbd_line
from stacklab.suites.openstack_calls import os_client, service
from stacklab.suites.storage_paths import traffic


def test_guest_writes_an_attached_volume_and_the_bytes_land_in_ceph(
    lab: LabContext, runners: dict[str, Runner]
) -> None:
    import time

    nl, cinder = nova_lab(lab, runners), service(lab, "cinder")
    controller, auth = nl.controller, nl.auth
    with guest_image(controller, auth) as image, instance(controller, auth, image, "stacklab-suite-attach") as booted:
        assert booted["status"] == "ACTIVE", f"the guest did not become ACTIVE: {booted}"
        host = str(booted["host"])
        volume = os_client(controller, "cinder", "create", {**auth, "size_gb": 1, "name": "stacklab-suite-attach"})
        try:
            before = traffic(lab, runners[host], host)
            attached = os_client(controller, "nova", "attach", {**auth, "server_id": booted["id"],
                                                                 "volume_id": volume["id"]})  # fmt: skip
            image_name = f"volume-{volume['id']}"
            what = f"the guest's line (nova attached the volume as {attached.get('device')})"
            pool, written = str(cinder["ceph_pool"]), lambda text: "stacklab-volume:" in text
            line = rbd_line(nl.admin, pool, image_name, written, what=what)
            assert line.startswith("stacklab-volume:vdb:"), (
                f"nova attached the volume as {attached.get('device')}; {pool}/{image_name} starts {line!r}, "
                "expected the guest's `stacklab-volume:vdb:` line"
            )
            after = traffic(lab, runners[host], host)
            assert after["storage"] > before["storage"], f"{host}'s br-storage NIC carried nothing: {before} {after}"
            shown = os_client(controller, "cinder", "show", {**auth, "volume_id": volume["id"]})
            assert shown["status"] == "in-use" and shown["attachments"], shown
            assert shown["attachments"][0]["server_id"] == booted["id"], shown["attachments"]
        finally:
            os_client(controller, "nova", "delete", {**auth, "server_id": booted["id"]})  # detaches the volume
            deadline = time.monotonic() + 120
            shown = os_client(controller, "cinder", "show", {**auth, "volume_id": volume["id"]})
            while shown.get("status") != "available" and time.monotonic() < deadline:
                time.sleep(3.0)
                shown = os_client(controller, "cinder", "show", {**auth, "volume_id": volume["id"]})
            for attachment in shown.get("attachments") or []:
                os_client(controller, "cinder", "detach", {**auth, "volume_id": volume["id"],
                                                           "attachment_id": attachment["attachment_id"]})  # fmt: skip
            os_client(controller, "cinder", "delete", {**auth, "volume_id": volume["id"]})
