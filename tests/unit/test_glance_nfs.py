"""glance's nfs store: the model's resolution (nodes, share, VM glance nodes), the mount unit, and the role against
fake nodes: glance-api on every glance node over the same NFS mount, the database and catalog on the controller,
the endpoint on the first node; observe sees a missing or foreign mount; removal unmounts and takes the files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import glance
from stacklab.drivers.openstack.common import service_layout
from stacklab.drivers.openstack.glance_nfs import node_layout
from stacklab.drivers.openstack.nfs_mounts import NfsMount, mount_problems, render_unit, unit_name
from stacklab.drivers.openstack.services import ServiceDriver
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult
from stacklab.model.load import load_lab, load_lab_text
from stacklab.plan.expand import USERSPACE_CHOICES, expand
from stacklab.plan.node_kind import node_kind
from stacklab.plan.resource import Resource
from tests.unit.test_services import FakeController, ok

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "labs" / "shared-nfs.yml"
SHARE = "10.236.20.11:/srv/nfs/glance"  # nfs1's storage address (auto addresses from .10, in file order) and the export


def lab_resources() -> dict[str, Resource]:
    return {r.name: r for r in expand(load_lab(LAB)) if r.kind == "service"}


def test_the_spec_names_the_glance_nodes_and_the_share() -> None:
    spec = lab_resources()["glance"].spec
    assert spec["hosts"] == ["infra1", "glance1", "glance2"]
    assert list(spec["config"]["nodes"]) == ["glance1", "glance2"]  # the first: the catalog's endpoint
    assert spec["config"]["share"] == SHARE and spec["config"]["store"] == "nfs"
    assert {"node/glance1", "node/glance2", "nfs/nfs1"} <= set(lab_resources()["glance"].deps)


def test_a_lab_without_store_nfs_keeps_its_glance_config() -> None:
    text = LAB.read_text().replace("glance: {store: nfs, nodes: [glance1, glance2], export: glance, cache: true}", "")
    (resource,) = [r for r in expand(load_lab_text(text, "lab.yml")) if r.name == "glance"]
    assert resource.spec["config"] == {"store": "file", "cache": True} and resource.spec["hosts"] == ["infra1"]


def test_auto_glance_nodes_are_vm_nodes_with_the_reason_and_the_controller_stays_a_container() -> None:
    lab = load_lab(LAB)
    kind, why = node_kind(lab, "glance1", USERSPACE_CHOICES)
    assert kind == "vm" and "glance store nfs" in why and "kernel NFS mount" in why
    assert node_kind(lab, "infra1", USERSPACE_CHOICES)[0] == "container"


def test_a_container_glance_node_is_refused_at_validate_with_file_and_line() -> None:
    text = LAB.read_text().replace(
        "  glance1:\n    image: openstack", "  glance1:\n    kind: container\n    image: openstack"
    )
    with pytest.raises(Exception) as raised:
        load_lab_text(text, "shared.yml")
    assert "shared.yml:47:32: openstack.glance.nodes[0]: node 'glance1' is a container" in str(raised.value)


def test_mount_unit_name_and_text() -> None:
    assert unit_name("/var/lib/glance/images") == "var-lib-glance-images.mount"
    assert unit_name("/srv/my-share/x") == "srv-my\\x2dshare-x.mount"
    with pytest.raises(ValueError):
        unit_name("/var/../etc")
    mount = NfsMount("lab", SHARE, "/var/lib/glance/images", "vers=4.2", "glance-api")
    text = render_unit(mount)
    assert f"What={SHARE}\nWhere=/var/lib/glance/images\nType=nfs\nOptions=vers=4.2,_netdev\n" in text
    assert "Before=glance-api.service\n" in text


def test_mount_problems_read_proc_mounts() -> None:
    mount = NfsMount("lab", SHARE, "/var/lib/glance/images", "vers=4.2", "glance-api")
    unit = {mount.unit_path: render_unit(mount)}
    nfs = f"{SHARE} /var/lib/glance/images nfs4 rw,vers=4.2,addr=10.236.20.11 0 0\n"
    local = "/dev/vda1 /var/lib/glance/images ext4 rw 0 0\n"
    for mounts, wanted in ((nfs, []), (local, ["is ext4 from /dev/vda1, not NFS"]), ("", ["is not mounted"])):
        import hashlib

        sha = hashlib.sha256(unit[mount.unit_path].encode()).hexdigest()
        runner = FakeRunner().expect(["sha256sum"], stdout=f"{sha}  {mount.unit_path}\n")
        runner.expect(["cat", "/proc/mounts"], stdout=mounts).expect(["systemctl", "is-active"])
        found = mount_problems(runner, mount, "glance1")
        assert [w for w in wanted if not any(w in f for f in found)] == [] and len(found) == len(wanted), found


def test_each_node_renders_its_own_bind_address_and_the_controllers_database() -> None:
    layout = service_layout(lab_resources()["glance"], "shared-nfs")
    text = glance.render_conf(node_layout(layout, "10.236.10.12"), "DB", "USER")
    assert "bind_host = 10.236.10.12\n" in text
    assert f"connection = mysql+pymysql://glance:DB@{layout.address}/glance\n" in text
    assert "filesystem_store_datadir = /var/lib/glance/images/\n" in text
    assert glance.render_dropin(layout).endswith("[Unit]\nRequiresMountsFor=/var/lib/glance/images\n")


@dataclass
class FakeGlanceNode(FakeController):
    """A node that also mounts: a mount unit started mounts its What= at its Where= (/proc/mounts)."""

    mounts: dict[str, tuple[str, str]] = field(default_factory=dict)

    def respond(self, argv: tuple[str, ...], stdin: str | None) -> CommandResult:
        if argv == ("cat", "/proc/mounts"):
            return ok("".join(f"{src} {where} {fs} rw 0 0\n" for where, (src, fs) in self.mounts.items()))
        if argv[0] == "mkdir":
            return ok()
        return super().respond(argv, stdin)

    def systemctl(self, args: tuple[str, ...]) -> CommandResult:
        units = [a for a in args[1:] if not a.startswith("-")]
        for unit in (u for u in units if u.endswith(".mount")):
            text = self.files.get(f"/etc/systemd/system/{unit}", "")
            fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
            if args[0] == "restart":
                self.mounts[fields["Where"]] = (fields["What"], "nfs4")
            elif args[0] == "stop" or (args[0] == "disable" and "--now" in args):
                self.mounts.pop(fields.get("Where", ""), None)
        return super().systemctl(args)


@pytest.fixture
def nodes() -> dict[str, FakeGlanceNode]:
    return {n: FakeGlanceNode() for n in ("infra1", "glance1", "glance2")}


@pytest.fixture
def ctx(tmp_path: Path, nodes: dict[str, FakeGlanceNode]) -> DriverContext:
    return DriverContext(lab=load_lab(LAB), runner=nodes["infra1"], state_dir=tmp_path / "state",
                         node_runner=lambda n: nodes[n])  # fmt: skip


def up(ctx: DriverContext) -> Mapping[str, Any]:
    driver, resources = ServiceDriver(), lab_resources()
    outputs = {}
    for name in ("mariadb", "memcached", "keystone", "glance"):
        outputs[name] = driver.apply(driver.diff(resources[name], driver.observe(resources[name], ctx), None), ctx)
    return outputs["glance"]


def test_up_runs_glance_api_on_every_node_over_the_mount_and_registers_the_first(
    ctx: DriverContext, nodes: dict[str, FakeGlanceNode]
) -> None:
    outputs = up(ctx)
    first, second = nodes["glance1"], nodes["glance2"]
    assert outputs["node"] == "glance1" and outputs["url"] == "http://10.236.10.12:9292"
    assert outputs["nodes"] == {"glance1": "http://10.236.10.12:9292", "glance2": "http://10.236.10.13:9292"}
    for node, address in ((first, "10.236.10.12"), (second, "10.236.10.13")):
        assert node.mounts["/var/lib/glance/images"] == (SHARE, "nfs4")
        assert {"glance-api", "var-lib-glance-images.mount"} <= node.running & node.enabled
        assert f"bind_host = {address}\n" in node.files[glance.CONF]
    # the schema sync once, from the first node; the database and the catalog on the controller
    assert [m[-1] for m in first.manage] == ["db_sync", glance.METADEFS_DIR] and second.manage == []
    controller = nodes["infra1"]
    assert "glance-api" not in controller.running and glance.CONF not in controller.files
    assert any("CREATE DATABASE IF NOT EXISTS `glance`" in s for s in controller.sql)
    (user,) = [r for r in controller.keystone_requests if r.get("user") == "glance"]
    assert user["endpoints"]["public"] == "http://10.236.10.12:9292"


def test_observe_sees_a_lost_or_foreign_mount_and_down_unmounts(
    ctx: DriverContext, nodes: dict[str, FakeGlanceNode]
) -> None:
    up(ctx)
    driver, resource = ServiceDriver(), lab_resources()["glance"]
    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.drift == ()
    nodes["glance2"].mounts.pop("/var/lib/glance/images")
    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.drift == ("/var/lib/glance/images on glance2 is not mounted",)
    nodes["glance2"].mounts["/var/lib/glance/images"] = ("/dev/vda1", "ext4")
    observed = driver.observe(resource, ctx)
    assert observed is not None and any("is ext4 from /dev/vda1, not NFS" in d for d in observed.drift)
    driver.delete("service/glance", {"spec": dict(resource.spec)}, ctx)
    for name in ("glance1", "glance2"):
        node = nodes[name]
        assert "/var/lib/glance/images" not in node.mounts and "glance-api" not in node.running
        assert not any(p.startswith(("/etc/glance", "/etc/systemd/system/var-lib")) for p in node.files)
