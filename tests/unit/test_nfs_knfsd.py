"""NFS role driver with the knfsd backend: golden exports and nfs.conf, the nfsd PlanError (the CI host's case),
apply/observe/delete on a fake node. knfsd cannot run on the CI host (no nfsd), so these tests are its proof."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.storage.nfs.driver import NfsDriver, nfs_layout
from stacklab.drivers.storage.nfs.knfsd import (
    exports_path,
    knfsd_state,
    nfs_conf_path,
    parse_exports,
    render_exports,
    render_nfs_conf,
)
from stacklab.errors import PlanError
from stacklab.exec.fake import FakeRunner
from stacklab.model.lab import Lab
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Change, Resource
from tests.golden_util import check_golden
from tests.unit.test_lvm import FakeNode

LABS = Path(__file__).resolve().parents[2] / "labs"


@pytest.fixture
def lab() -> Lab:
    return load_lab_text((LABS / "aio.yml").read_text(), "aio.yml")


@pytest.fixture
def resource(lab: Lab) -> Resource:
    nfs = next(r for r in expand(lab) if r.kind == "nfs")
    return Resource(nfs.kind, nfs.name, {**nfs.spec, "implementation": "knfsd"}, nfs.deps)


def knfsd_node(*, nfsd: bool = True, active: bool = True) -> FakeNode:
    node = FakeNode(files={"/usr/sbin/rpc.nfsd": ""})
    node.expect(["grep", "-qw", "nfsd", "/proc/filesystems"], rc=0 if nfsd else 1)
    node.expect(["modprobe", "nfsd"], rc=1)
    node.expect(["systemctl", "is-active"], rc=0 if active else 3)
    node.expect(["systemctl"])
    node.expect(["exportfs", "-ra"])
    return node


def ctx_for(lab: Lab, node: FakeRunner, state_dir: Path) -> DriverContext:
    return DriverContext(lab=lab, runner=FakeRunner(), state_dir=state_dir, node_runner=lambda _n: node)


def test_files_golden(lab: Lab, resource: Resource) -> None:
    plan = nfs_layout(resource.id, resource.name, resource.spec, lab.name)
    exports = render_exports(plan)
    check_golden("storage/knfsd-stacklab-aio.exports", exports)
    check_golden("storage/knfsd-stacklab-aio.nfs.conf", render_nfs_conf(plan))
    assert "/srv/nfs/images 172.29.244.0/24(rw,sync,no_root_squash,no_subtree_check)\n" in exports
    assert parse_exports(exports)["/srv/nfs/instances"] == {
        "172.29.244.0/24": ["no_root_squash", "no_subtree_check", "rw", "sync"]
    }
    assert knfsd_state(exports, render_nfs_conf(plan))["address"] == "172.29.244.21"


def test_parse_exports_quoted_path() -> None:
    assert parse_exports('"/srv/my share" 10.0.0.0/8(ro) host1(rw,sync)\n# x\n') == {
        "/srv/my share": {"10.0.0.0/8": ["ro"], "host1": ["rw", "sync"]}
    }


def test_no_nfsd_is_a_plan_error(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = knfsd_node(nfsd=False)
    with pytest.raises(PlanError, match="no nfsd") as err:
        NfsDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))
    assert "implementation: ganesha" in str(err.value) and "kind: vm" in str(err.value)
    assert not [c for c in node.calls if c[0] in ("install", "mkdir", "exportfs", "systemctl")]


def test_nfsd_module_is_loaded_when_missing(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    """A VM node's cloud kernel has nfsd as a module that nothing loaded yet: check_node loads it and goes on
    (found on a real VM node: /proc/filesystems lists nfsd only after `modprobe nfsd`)."""
    node = knfsd_node(nfsd=False)
    node.rules.clear()
    node.expect(["grep", "-qw", "nfsd", "/proc/filesystems"], rc=1, times=1)
    node.expect(["modprobe", "nfsd"])
    node.expect(["grep", "-qw", "nfsd", "/proc/filesystems"], rc=0)
    node.expect(["systemctl", "is-active"], rc=0)
    node.expect(["systemctl"])
    node.expect(["exportfs", "-ra"])
    NfsDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))
    assert ("modprobe", "nfsd") in node.calls and ("exportfs", "-ra") in node.calls


def test_apply_then_noop_then_delete(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = knfsd_node(active=False)
    ctx = ctx_for(lab, node, tmp_path)
    outputs = NfsDriver().apply(Change(resource, Action.CREATE), ctx)
    assert outputs["implementation"] == "knfsd" and outputs["server"] == "172.29.244.21"
    plan = nfs_layout(resource.id, resource.name, resource.spec, lab.name)
    assert node.files[exports_path("aio")] == render_exports(plan)
    assert node.files[nfs_conf_path("aio")] == render_nfs_conf(plan)
    assert ("systemctl", "restart", "nfs-server.service") in node.calls
    assert ("systemctl", "enable", "--now", "rpcbind.service") in node.calls
    assert ("exportfs", "-ra") in node.calls
    # then the port filter: only the storage CIDR reaches rpcbind, nfs and the pinned MOUNT port
    assert node.calls[-1] == ("systemctl", "restart", "stacklab-filter-nfs.service")
    assert "ip saddr != 172.29.244.0/24" in node.files["/etc/stacklab/nftables/nfs.nft"]

    node2 = knfsd_node(active=True)
    node2.files.update(node.files)
    ctx2 = ctx_for(lab, node2, tmp_path)
    observed = NfsDriver().observe(resource, ctx2)
    assert observed is not None and observed.owned and observed.drift == ()
    recorded = {"hash": resource.hash, "spec": dict(resource.spec), "outputs": outputs}
    assert NfsDriver().diff(resource, observed, recorded).action is Action.NOOP
    NfsDriver().apply(Change(resource, Action.UPDATE), ctx2)
    assert not [c for c in node2.calls if c[0] == "install" or c[1:2] == ("restart",)]

    NfsDriver().delete(resource.id, {"name": "storage1", "spec": dict(resource.spec)}, ctx2)
    assert exports_path("aio") not in node2.files and nfs_conf_path("aio") not in node2.files
    assert ("systemctl", "disable", "--now", "nfs-server.service") in node2.calls


def test_foreign_exports_file_is_not_owned(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = knfsd_node()
    node.files[exports_path("aio")] = "/data *(rw)\n"
    observed = NfsDriver().observe(resource, ctx_for(lab, node, tmp_path))
    assert observed is not None and not observed.owned
