"""Suite `volumes`: cinder's block path on the lab's Ceph, proven the way a hypervisor uses it.

A volume made through cinder's API (from a client node, over br-mgmt) becomes an RBD image of its size in the
`volumes` pool. An attachment made with the client's connector returns what nova would hand to QEMU (driver `rbd`,
pool/image, the monitors, the cephx user and the libvirt secret UUID); QEMU's rbd driver on the client writes a
pattern through exactly those monitors and that user, over br-storage, and the Ceph admin node finds the bytes in
the image. cinder tracks the volume in-use, available again after the detach, and gone (with its image) after the
delete. The guest side (nova attaching the disk to an instance) belongs to the `attach` suite.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest

from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.openstack_calls import admin_auth, os_client, service
from stacklab.suites.storage_paths import (
    RBD_TOOL,
    Pattern,
    assert_carried_by_storage,
    client_nodes,
    outputs,
    put_private,
    qemu_io,
    rbd_tool,
    traffic,
    upload_pattern,
)

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class VolumesLab:
    cinder: Mapping[str, Any]  # the cinder service's outputs
    client: str  # a node on both networks with the cinder keyring (a hypervisor's place)
    admin_node: str  # the first Ceph monitor: has the admin key
    auth: Mapping[str, str]


@pytest.fixture(scope="module")
def vlab(lab: LabContext, runners: dict[str, Runner]) -> VolumesLab:
    cinder = service(lab, "cinder")
    found = outputs(lab, "ceph")
    if found is None:
        pytest.skip("the lab has no Ceph cluster for cinder's RBD backend")
    mons = list(found[1]["mons"])
    clients = [n for n in client_nodes(lab, mons[0]) if n not in mons and n != cinder["node"]]
    if not clients:
        pytest.skip("the lab has no client node on both networks besides the controller")
    tool = resources.files("stacklab.suites").joinpath("rbd_tool.py").read_text()
    put_private(runners[mons[0]], RBD_TOOL, tool)
    return VolumesLab(cinder, clients[0], mons[0], admin_auth(lab))


def cinder_call(vlab: VolumesLab, runners: dict[str, Runner], action: str, **request: Any) -> dict[str, Any]:
    return os_client(runners[vlab.client], "cinder", action, {**vlab.auth, **request})


@pytest.fixture
def volume(vlab: VolumesLab, runners: dict[str, Runner]) -> Iterator[dict[str, Any]]:
    """A 1 GiB volume made through the API; detached and deleted afterwards, even when the test fails."""
    made = cinder_call(vlab, runners, "create", size_gb=1, name="stacklab-suite")
    yield made
    shown = cinder_call(vlab, runners, "show", volume_id=made["id"])
    for attachment in shown.get("attachments") or []:
        cinder_call(vlab, runners, "detach", volume_id=made["id"], attachment_id=attachment["attachment_id"])
    if shown.get("http") == 200:
        cinder_call(vlab, runners, "delete", volume_id=made["id"])


def rbd_images(runners: dict[str, Runner], vlab: VolumesLab) -> list[str]:
    pool = str(vlab.cinder["ceph_pool"])
    listing = runners[vlab.admin_node].run(["rbd", "--id", "admin", "-p", pool, "ls"], timeout=60.0)
    return listing.stdout.split()


def test_scheduler_reports_the_rbd_pool(vlab: VolumesLab, runners: dict[str, Runner]) -> None:
    pools = {p["name"]: p.get("capabilities", {}) for p in cinder_call(vlab, runners, "pools")["pools"]}
    wanted = str(vlab.cinder["pool"])
    assert wanted in pools, f"expected cinder's scheduler to know {wanted}, saw {sorted(pools)}"
    caps = pools[wanted]
    assert caps.get("storage_protocol") == "ceph", f"{wanted}: expected storage_protocol ceph, saw {caps}"
    assert float(caps.get("total_capacity_gb") or 0) > 0, f"{wanted}: no capacity reported: {caps}"


def test_volume_is_an_rbd_image_of_its_size(
    vlab: VolumesLab, runners: dict[str, Runner], volume: dict[str, Any]
) -> None:
    assert volume["status"] == "available" and volume["host"] == vlab.cinder["pool"], volume
    image = f"volume-{volume['id']}"
    assert image in rbd_images(runners, vlab), f"expected RBD image {image} in pool {vlab.cinder['ceph_pool']}"
    info = runners[vlab.admin_node].run(
        ["rbd", "--id", "admin", "info", f"{vlab.cinder['ceph_pool']}/{image}", "--format", "json"], timeout=60.0
    )
    assert json.loads(info.stdout)["size"] == GIB, f"{image}: expected {GIB} bytes, saw {info.stdout[:300]}"


def test_attachment_connection_info_carries_bytes_to_ceph(
    lab: LabContext, vlab: VolumesLab, runners: dict[str, Runner], volume: dict[str, Any]
) -> None:
    client = runners[vlab.client]
    connector = {
        "host": vlab.client,
        "ip": lab.address(vlab.client, "storage"),
        "platform": "x86_64",
        "os_type": "linux",
        "multipath": False,
        "do_local_attach": False,
    }
    attached = cinder_call(vlab, runners, "attach", volume_id=volume["id"], connector=connector)
    info = attached["connection_info"] or {}
    data = info.get("data") or info  # the attachments API flattens `data` into connection_info
    image = f"volume-{volume['id']}"
    assert info.get("driver_volume_type") == "rbd", f"expected an rbd connection, saw {info}"
    assert data.get("name") == f"{vlab.cinder['ceph_pool']}/{image}", f"expected pool/image, saw {data.get('name')}"
    assert data.get("auth_username") == vlab.cinder["ceph_user"], f"expected cephx user cinder, saw {data}"
    assert data.get("secret_uuid") == vlab.cinder["rbd_secret_uuid"], f"expected the lab's secret UUID, saw {data}"
    storage = ipaddress.ip_network(str(lab.networks["storage"]["cidr"]))
    hosts = [str(h) for h in data.get("hosts", [])]
    assert hosts and all(ipaddress.ip_address(h) in storage for h in hosts), (
        f"expected monitors on the storage network {storage}, saw {hosts}"
    )
    assert attached["complete_http"] == 204 and attached["status"] == "in-use", attached

    # what nova's libvirt driver does with it: QEMU's rbd driver, those monitors, that user
    pool, _, name = str(data["name"]).partition("/")
    servers = ",".join(
        f"server.{i}.host={h},server.{i}.port={p}" for i, (h, p) in enumerate(zip(hosts, data["ports"], strict=True))
    )
    opts = f"driver=rbd,pool={pool},image={name},user={data['auth_username']},{servers}"
    pattern = Pattern.random(offset=8 * MIB, size=4 * MIB)
    src = upload_pattern(client, pattern, "cinder-volume")
    before = traffic(lab, client, vlab.client)
    wrote = qemu_io(client, opts, f"write -s {src} {pattern.offset} {len(pattern.data)}")
    after = traffic(lab, client, vlab.client)
    assert "wrote" in wrote.stdout, f"expected `wrote ...` from qemu-io, saw {wrote.stdout!r} {wrote.stderr!r}"
    assert_carried_by_storage(before, after, len(pattern.data), "cinder RBD volume")
    admin = runners[vlab.admin_node]
    seen = rbd_tool(admin, "admin", pool, name, "read", str(pattern.offset), str(len(pattern.data))).strip()
    assert seen == pattern.sha256, f"{pool}/{name} on Ceph has {seen}, the client wrote {pattern.sha256}"

    detached = cinder_call(vlab, runners, "detach", volume_id=volume["id"], attachment_id=attached["attachment_id"])
    assert detached["status"] == "available", detached
    cinder_call(vlab, runners, "delete", volume_id=volume["id"])
    assert image not in rbd_images(runners, vlab), f"{image} is still in the pool after the volume was deleted"
