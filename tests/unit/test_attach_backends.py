"""nova on cinder's kernel backends: the reference lab's VM compute (validate refuses a container compute for lvm/nfs
volumes with the reason, `auto` makes it a VM on every host), the units nova-compute's os-brick needs there, and
the `attach` suite's checks of the transport on the compute (attach_backends.py) on recorded outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import service_layout
from stacklab.drivers.openstack.nova import CONF, INITIATOR_FILE, ROLE, block_storage_lines, initiator_units
from stacklab.exec.fake import FakeRunner
from stacklab.model import load_lab, load_lab_text
from stacklab.model.addressing import node_addresses
from stacklab.model.errors import LabError
from stacklab.plan.expand import expand
from stacklab.plan.node_kind import node_kind
from stacklab.suites.attach_backends import (
    attached_disk,
    initiator_name,
    iscsi_session_problems,
    nfs_mount_problems,
    parse_mounts,
)
from stacklab.suites.storage_paths import session_block
from tests.unit.test_host_choose import full_report, picked

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "labs" / "reference.yml"


def test_reference_lab_has_a_vm_compute_with_nova_beside_the_kernel_backends(tmp_path: Path) -> None:
    lab = load_lab(REFERENCE)
    assert lab.nodes["compute1"].kind == "vm" and "storage" in lab.nodes["compute1"].nics
    assert lab.openstack is not None and {"nova", "glance", "placement", "neutron"} <= set(lab.openstack.services)
    assert "attach" in lab.verify.suites
    ctx = DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path)
    assert initiator_units(ctx) == ("iscsid",)  # os-brick's iSCSI logins on the compute go through iscsid


def test_a_lab_without_kernel_backends_starts_no_initiator_on_its_computes(tmp_path: Path) -> None:
    lab = load_lab(ROOT / "labs" / "control-plane.yml")
    ctx = DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path)
    assert initiator_units(ctx) == ()
    assert all(block_storage_lines(ctx, node) == "" for node in lab.nodes)  # rbd labs' nova.conf is unchanged


def nova_files(lab_file: Path, node: str, tmp_path: Path) -> dict[str, str]:
    lab = load_lab(lab_file)
    layout = service_layout(next(r for r in expand(lab) if r.id == "service/nova"), lab.name)
    ctx = DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path)
    return ROLE._files(ctx, layout, node, ("db", "rabbit", "user", "metadata"))


def nova_conf(lab_file: Path, node: str, tmp_path: Path) -> str:
    return nova_files(lab_file, node, tmp_path)[CONF]


def test_each_vm_compute_has_its_own_initiator_name(tmp_path: Path) -> None:
    # the image's /etc/iscsi/initiatorname.iscsi is the same on every node built from it
    text = nova_files(REFERENCE, "compute1", tmp_path)[INITIATOR_FILE]
    assert initiator_name(text) == "iqn.2026-11.dev.stacklab:reference:compute1"
    assert INITIATOR_FILE not in nova_files(REFERENCE, "infra1", tmp_path)
    assert INITIATOR_FILE not in nova_files(ROOT / "labs" / "control-plane.yml", "compute1", tmp_path)


def test_the_vm_computes_connector_gives_cinder_its_storage_address(tmp_path: Path) -> None:
    text = nova_conf(REFERENCE, "compute1", tmp_path)
    storage = str(node_addresses(load_lab(REFERENCE))["compute1"]["storage"])
    assert text.endswith(f"[DEFAULT]\nmy_block_storage_ip = {storage}\n"), text[-300:]
    assert "virt_type = qemu" in text and "images_type = qcow2" in text
    assert "my_block_storage_ip" not in nova_conf(REFERENCE, "infra1", tmp_path)


def reference_text(kind: str) -> str:
    text = REFERENCE.read_text()
    head, _, tail = text.partition("  compute1:\n")
    return head + "  compute1:\n" + tail.replace("kind: vm", f"kind: {kind}", 1)


def test_a_container_compute_for_lvm_and_nfs_volumes_is_refused_at_its_line() -> None:
    text = reference_text("container")
    line = text.splitlines().index("  compute1:") + 2  # the `kind:` line under it (1-based)
    with pytest.raises(LabError) as caught:
        load_lab_text(text, "ref.yml")
    message = str(caught.value)
    assert f"ref.yml:{line}:" in message and "nodes.compute1.kind" in message, message
    assert "os-brick" in message and "lvm and nfs" in message and "kind: vm" in message


def test_a_compute_without_a_storage_nic_is_refused() -> None:
    text = reference_text("vm").replace(
        "    memory: 2GiB\n    nics: [mgmt, storage]\n    roles: [compute]", "    memory: 2GiB\n    nics: [mgmt]\n"
        "    roles: [compute]"
    )  # fmt: skip
    with pytest.raises(LabError, match=r"nodes\.compute1\.nics: compute 'compute1' has no NIC on the storage"):
        load_lab_text(text, "ref.yml")


def test_an_auto_compute_for_kernel_volumes_is_a_vm_on_every_host() -> None:
    lab = load_lab_text(reference_text("auto"), "ref.yml")
    full = {**picked(full_report()), "node_kind": "container"}  # a host whose own kernel has every path
    kind, why = node_kind(lab, "compute1", full)
    assert kind == "vm" and "os-brick" in why, why


SESSION_P3 = """iSCSI Transport Class version 2.0-870
version 2.1.8
Target: iqn.2010-10.org.openstack:volume-5a1 (non-flash)
	Current Portal: 10.231.20.11:3261,1
	Persistent Portal: 10.231.20.11:3261,1
		**********
		Interface:
		**********
		Iface Name: default
		Iface Transport: tcp
		Iface Initiatorname: iqn.1993-08.org.debian:01:5b7d2a9c1e0
		Iface IPaddress: 10.231.20.12
		Iface HWaddress: default
		Iface Netdev: default
		SID: 1
		iSCSI Connection State: LOGGED IN
		iSCSI Session State: LOGGED_IN
		Internal iscsid Session State: NO CHANGE
		************************
		Attached SCSI devices:
		************************
		Host Number: 2	State: running
		scsi2 Channel 00 Id 0 Lun: 0
			Attached scsi disk sda		State: running
Target: iqn.2010-10.org.openstack:volume-9c0 (non-flash)
	Current Portal: 10.231.20.11:3260,1
	Persistent Portal: 10.231.20.11:3260,1
		Iface IPaddress: 10.231.10.12
		iSCSI Session State: FAILED
"""


def test_the_session_os_brick_logged_in_is_checked_portal_source_state_and_disk() -> None:
    block = session_block(SESSION_P3, "iqn.2010-10.org.openstack:volume-5a1")
    assert attached_disk(block) == "sda"
    ok = iscsi_session_problems(block, iqn="iqn.x", portal="10.231.20.11:3261", source_ip="10.231.20.12")
    assert ok == []
    wrong_port = iscsi_session_problems(block, iqn="iqn.x", portal="10.231.20.11:3260", source_ip="10.231.20.12")
    assert len(wrong_port) == 1 and "not through 10.231.20.11:3260" in wrong_port[0]
    other = session_block(SESSION_P3, "iqn.2010-10.org.openstack:volume-9c0")
    found = iscsi_session_problems(other, iqn="iqn.y", portal="10.231.20.11:3260", source_ip="10.231.20.12")
    assert any("not from 10.231.20.12" in p for p in found) and any("not logged in" in p for p in found)
    assert any("no attached SCSI disk" in p for p in found)
    assert iscsi_session_problems("", iqn="iqn.z", portal="p", source_ip="s") == [
        "no iSCSI session to iqn.z on the compute"
    ]


FINDMNT = (
    'SOURCE="10.231.20.11:/srv/nfs/volumes" TARGET="/var/lib/nova/mnt/5d41" FSTYPE="nfs4" '
    'OPTIONS="rw,relatime,vers=4.2,rsize=524288,addr=10.231.20.11,clientaddr=10.231.20.12"\n'
    'SOURCE="10.231.10.11:/srv/other" TARGET="/mnt/other" FSTYPE="nfs" OPTIONS="rw,vers=3,addr=10.231.10.11"\n'
)


def test_the_kernel_nfs_mount_is_checked_server_and_client_addresses() -> None:
    mounts = parse_mounts(FINDMNT)
    assert [m["TARGET"] for m in mounts] == ["/var/lib/nova/mnt/5d41", "/mnt/other"]
    share = "10.231.20.11:/srv/nfs/volumes"
    assert nfs_mount_problems(mounts, share=share, server_ip="10.231.20.11", source_ip="10.231.20.12") == []
    wrong = nfs_mount_problems(mounts, share=share, server_ip="10.231.20.11", source_ip="10.231.10.12")
    assert len(wrong) == 1 and "clientaddr=10.231.20.12" in wrong[0]
    missing = nfs_mount_problems(mounts, share="10.231.20.11:/srv/x", server_ip="10.231.20.11", source_ip="s")
    assert "saw 0" in missing[0]
    assert parse_mounts("") == []


def test_initiator_name_is_read_from_open_iscsis_file() -> None:
    text = "## DO NOT EDIT\nInitiatorName=iqn.1993-08.org.debian:01:5b7d2a9c1e0\n"
    assert initiator_name(text) == "iqn.1993-08.org.debian:01:5b7d2a9c1e0"
    assert initiator_name("GenerateName=yes\n") == ""
