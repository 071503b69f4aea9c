"""nova's instances_on nfs: the model's resolution (the share, VM computes with the reason), each refusal with its
file:line, the suites' lab checks, the mount unit and nova-compute's drop-in, and the compute step against fake
nodes: the export mounted at instances_path (owned by nova) before nova-compute starts, observe sees a lost mount,
removal unmounts."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import nova, nova_instances_nfs
from stacklab.drivers.openstack.common import service_layout
from stacklab.drivers.openstack.nfs_mounts import render_unit
from stacklab.errors import PlanError
from stacklab.exec.runner import CommandResult
from stacklab.model.errors import LabError
from stacklab.model.load import load_lab, load_lab_text
from stacklab.model.nova_instances import INSTANCES_PATH
from stacklab.plan.expand import USERSPACE_CHOICES, expand
from stacklab.plan.node_kind import node_kind
from stacklab.plan.resource import Resource
from tests.unit.test_glance_nfs import FakeGlanceNode
from tests.unit.test_services import NovaNodes, ok

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "labs" / "nova-nfs.yml"
TEXT = LAB.read_text()
SHARE = "10.237.20.11:/srv/nfs/instances"  # nfs1's storage address (auto from .10, in file order) and the export
MOUNT_UNIT = "var-lib-nova-instances.mount"


def nova_resource(text: str = TEXT) -> Resource:
    return next(r for r in expand(load_lab_text(text, "nova-nfs.yml")) if r.id == "service/nova")


def problems(text: str) -> list[str]:
    try:
        load_lab_text(text, "nfs.yml")
    except LabError as raised:
        return str(raised).splitlines()[1:]
    return []


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_spec_carries_the_share_its_server_and_waits_for_the_export() -> None:
    spec = nova_resource().spec
    assert spec["config"]["instances_on"] == "nfs" and spec["config"]["instances_share"] == SHARE
    assert spec["config"]["instances_server"] == "nfs1" and spec["config"]["instances_mount_options"] == "vers=4.2"
    assert "nfs/nfs1" in nova_resource().deps  # the export exists before a compute mounts it


LOCAL = TEXT.replace("  nova: {instances_on: nfs, instances_export: instances}\n", "").replace(
    "suites: [infra, migration, evacuation]", "suites: [infra]"
)


def test_a_lab_without_instances_on_nfs_keeps_its_nova_config() -> None:
    text = LOCAL
    assert nova_resource(text).spec["config"] == {"computes": [], "images_type": "qcow2", "instances_on": "local"}


def test_auto_computes_are_vm_nodes_with_the_reason() -> None:
    lab = load_lab(LAB)
    text = TEXT.replace("  compute1:\n    kind: vm\n", "  compute1:\n")
    kind, why = node_kind(load_lab_text(text, "nfs.yml"), "compute1", USERSPACE_CHOICES)
    assert kind == "vm" and "nova instances_on nfs" in why and "kernel NFS mount" in why
    assert node_kind(lab, "infra1", USERSPACE_CHOICES)[0] == "container"


def test_the_shipped_lab_is_valid() -> None:
    assert problems(TEXT) == []


def test_a_container_compute_is_refused_with_file_and_line() -> None:
    text = TEXT.replace("  compute2:\n    kind: vm\n", "  compute2:\n    kind: container\n")
    (found,) = problems(text)
    assert found.startswith(f"nfs.yml:{line_of(text, '  compute2:') + 1}:5: ")
    assert (
        "nodes.compute2.kind: compute 'compute2' is a container: nova's instances_path is a kernel NFS mount" in found
    )


def test_an_unknown_export_is_refused() -> None:
    text = TEXT.replace("instances_export: instances}", "instances_export: nosuch}")
    (found,) = problems(text)
    assert f"nfs.yml:{line_of(text, 'nosuch')}:" in found
    assert "openstack.nova.instances_export: unknown export 'nosuch' (hint: storage.nfs exports: instances)" in found


def test_images_type_rbd_with_instances_on_nfs_is_refused() -> None:
    text = TEXT.replace("nova: {instances_on: nfs,", "nova: {images_type: rbd, instances_on: nfs,")
    found = [p for p in problems(text) if "instances_path on NFS" in p]
    assert (
        len(found) == 1 and "openstack.nova.images_type: images_type rbd keeps the instance disks in Ceph" in found[0]
    )


def test_instances_export_without_nfs_is_refused() -> None:
    text = TEXT.replace("instances_on: nfs, ", "").replace("suites: [infra, migration, evacuation]", "suites: [infra]")
    (found,) = problems(text)
    assert "openstack.nova.instances_export: instances_export is used with instances_on: nfs only" in found


def test_no_nfs_export_is_refused() -> None:
    text = TEXT.replace("      - {name: instances, path: /srv/nfs/instances, size: 4GiB}\n", "").replace(
        "    exports:\n", "    exports: []\n"
    )
    assert any("openstack.nova.instances_on: nova instances_on nfs needs storage.nfs with an export" in p
               for p in problems(text.replace(", instances_export: instances", "")))  # fmt: skip


def test_a_compute_without_a_storage_nic_is_refused() -> None:
    text, n = re.subn(r"(  compute2:\n(?:    .*\n)*?    nics: \[mgmt), storage\]", r"\1]", TEXT)
    assert n == 1
    assert any("compute 'compute2' has no NIC on the storage network" in p for p in problems(text))


def test_the_export_of_cinder_nfs_volumes_or_glances_store_is_refused() -> None:
    cinder = TEXT.replace("glance, placement, neutron, nova]", "glance, placement, neutron, nova, cinder]").replace(
        "  glance: {store: file}\n", "  glance: {store: file}\n  cinder: {backends: [nfs], nfs: {node: nfs1}}\n"
    )
    assert any("export 'instances' holds cinder's nfs volumes as well" in p for p in problems(cinder))
    glance = TEXT.replace("glance: {store: file}", "glance: {store: nfs, nodes: [infra1], export: instances}")
    assert any("openstack.glance.export: export 'instances' is nova's instances_path as well" in p
               for p in problems(glance))  # fmt: skip


def test_the_migration_suite_accepts_nfs_computes_and_wants_two() -> None:
    assert problems(TEXT) == []  # migration and evacuation listed, no RBD
    one = TEXT.replace("    roles: [compute]\nstorage:", "    roles: [client]\nstorage:")
    assert any("live migration needs two compute nodes on nova's NFS instances_path in zone nova" in p
               for p in problems(one))  # fmt: skip


def test_the_compute_drop_in_requires_the_mount_and_the_unit_comes_before_nova_compute() -> None:
    plan = service_layout(nova_resource(), "nova-nfs")
    assert nova.render_dropin(plan, "nova-compute").endswith("[Unit]\nRequiresMountsFor=/var/lib/nova/instances\n")
    assert "RequiresMountsFor" not in nova.render_dropin(plan, "nova-conductor")
    mount = nova_instances_nfs.instances_mount(plan)
    assert mount.unit == MOUNT_UNIT
    text = render_unit(mount)
    assert f"What={SHARE}\nWhere=/var/lib/nova/instances\nType=nfs\nOptions=vers=4.2,_netdev\n" in text
    assert "Before=nova-compute.service\n" in text
    local = service_layout(nova_resource(LOCAL), "x")
    assert "RequiresMountsFor" not in nova.render_dropin(local, "nova-compute")


def test_a_spec_on_nfs_without_its_share_is_refused_at_plan() -> None:
    plan = service_layout(nova_resource(), "nova-nfs")
    broken = dataclasses.replace(plan, config={k: v for k, v in plan.config.items() if k != "instances_share"})
    with pytest.raises(PlanError, match="without the share"):
        nova_instances_nfs.check(broken)


@dataclass
class FakeNfsCompute(FakeGlanceNode, NovaNodes):
    """A compute that mounts (FakeGlanceNode) and runs nova's compute step (NovaNodes); it logs systemctl's
    start/restart/stop in order and the chown of the mount point."""

    order: list[str] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)

    def respond(self, argv: tuple[str, ...], stdin: str | None) -> CommandResult:
        if argv[0] == "chown" and argv[-1] == INSTANCES_PATH:
            self.owners[argv[-1]] = argv[1]
            return ok()
        if argv[:2] == ("cat", "/etc/ssh/ssh_host_ed25519_key.pub"):
            return ok("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOv1 root@compute\n")
        return super().respond(argv, stdin)

    def systemctl(self, args: tuple[str, ...]) -> CommandResult:
        if args[0] in ("start", "restart", "stop") or args[:2] == ("disable", "--now"):
            self.order.append(" ".join(a for a in args if not a.startswith("-")))
        return super().systemctl(args)


@pytest.fixture
def computes() -> dict[str, FakeNfsCompute]:
    return {n: FakeNfsCompute() for n in ("compute1", "compute2")}


@pytest.fixture
def ctx(tmp_path: Path, computes: dict[str, FakeNfsCompute]) -> DriverContext:
    return DriverContext(lab=load_lab(LAB), runner=NovaNodes(), state_dir=tmp_path / "state",
                         node_runner=lambda n: computes[n])  # fmt: skip


def test_the_compute_step_mounts_the_export_before_nova_compute_starts(
    ctx: DriverContext, computes: dict[str, FakeNfsCompute]
) -> None:
    plan = service_layout(nova_resource(), "nova-nfs")
    secrets = ("DB", "RABBIT", "USER", "META")
    for name, node in computes.items():
        nova.Nova()._ensure_compute(ctx, node, plan, name, secrets)
        assert node.mounts[INSTANCES_PATH] == (SHARE, "nfs4")
        assert node.owners[INSTANCES_PATH] == "nova:nova"
        assert {MOUNT_UNIT, "nova-compute"} <= node.running and MOUNT_UNIT in node.enabled
        assert node.order.index(f"restart {MOUNT_UNIT}") < node.order.index("restart nova-compute"), node.order
        assert node.files[nova.dropin_path("nova-compute")].endswith("RequiresMountsFor=/var/lib/nova/instances\n")
        assert nova_instances_nfs.instances_problems(node, plan, name) == []
    lost = computes["compute2"]
    lost.mounts.pop(INSTANCES_PATH)
    assert nova_instances_nfs.instances_problems(lost, plan, "compute2") == [
        "/var/lib/nova/instances on compute2 is not mounted"
    ]
    lost.mounts[INSTANCES_PATH] = ("/dev/vda1", "ext4")
    assert any("is ext4 from /dev/vda1, not NFS" in p for p in nova_instances_nfs.instances_problems(lost, plan, "c2"))
    node = computes["compute1"]
    nova_instances_nfs.remove_instances(node, plan)
    assert INSTANCES_PATH not in node.mounts
    assert f"/etc/systemd/system/{MOUNT_UNIT}" not in node.files


def test_the_outputs_tell_the_suites_where_the_disks_are() -> None:
    plan = service_layout(nova_resource(), "nova-nfs")
    found = nova.compute_outputs(plan)
    assert found["instances_on"] == "nfs" and found["instances_share"] == SHARE
    assert found["instances_server"] == "nfs1" and found["instances_export_path"] == "/srv/nfs/instances"
