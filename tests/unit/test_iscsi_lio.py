"""LIO backend: the golden rtslib requests, LIO_TOOL itself against a stand-in rtslib_fb, the saveconfig.json
parser, PlanErrors (no configfs, rbd), and the role driver's apply/observe/delete against a fake node. The real
thing runs in VM storage nodes (labs/kernel.yml, tests/integration/test_kernel_lab.py); the CI host has no configfs.

`tests/golden/storage/lio-saveconfig.sample.json` is hand-written in the format of rtslib-fb 2.1.75's
`RTSRoot.dump()` (what `save_to_file` writes): storage_objects with plugin/name/dev, targets with tpgs,
luns (storage_object paths), portals and node_acls carrying chap_userid/chap_password.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.storage.iscsi.driver import IscsiDriver, iscsi_layout
from stacklab.drivers.storage.iscsi.lio import (
    LIO_TOOL,
    PYTHON,
    RTSLIB,
    SAVECONFIG,
    LioBackend,
    parse_saveconfig,
    removal_request,
    render_lio_request,
    render_lio_script,
)
from stacklab.drivers.storage.iscsi.types import chap_secret_name, drift_of
from stacklab.errors import PlanError
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult
from stacklab.model.lab import Ceph, CephOsd, Lab
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Change, Resource
from tests.golden_util import GOLDEN, check_golden
from tests.unit.test_lvm import FakeNode

LABS = Path(__file__).resolve().parents[2] / "labs"
SAMPLE = GOLDEN / "storage/lio-saveconfig.sample.json"
IQN = "iqn.2026-11.dev.stacklab:lvm-iscsi:vol1"
STORES = {"lvm-iscsi-vol1": "block"}


@pytest.fixture
def lab() -> Lab:
    return load_lab_text((LABS / "lvm-iscsi.yml").read_text(), "lvm-iscsi.yml")


@pytest.fixture
def resource(lab: Lab) -> Resource:
    iscsi = next(r for r in expand(lab) if r.kind == "iscsi")
    return Resource(iscsi.kind, iscsi.name, {**iscsi.spec, "implementation": "lio"}, iscsi.deps)


def lio_node(*, configfs: bool = True) -> FakeNode:
    node = FakeNode(files={"/proc/filesystems": ""})
    node.dirs.add(RTSLIB)
    if configfs:
        node.dirs.add("/sys/kernel/config/target")
    node.expect(["grep", "-qw", "configfs", "/proc/filesystems"], rc=0 if configfs else 1)
    node.expect(["modprobe", "target_core_mod"], rc=1)
    node.expect(["lvs", "cinder-volumes/iscsi-vol1"], rc=5, times=1)
    node.expect(["lvcreate"])
    node.expect(["systemctl"])
    return node


def ctx_for(lab: Lab, node: FakeRunner, state_dir: Path) -> DriverContext:
    return DriverContext(lab=lab, runner=FakeRunner(), state_dir=state_dir, node_runner=lambda _n: node)


def test_request_golden(lab: Lab, resource: Resource) -> None:
    plan = iscsi_layout(resource.id, resource.name, resource.spec, lab.name)
    check_golden("storage/lio-requests.txt", render_lio_script(plan))
    request = render_lio_request(plan, plan.targets[0], STORES)
    assert request.argv() == [PYTHON, "-c", LIO_TOOL]
    body = json.loads(request.payload({chap_secret_name("vol1"): "s3cret-16-chars!"}))
    assert body["op"] == "apply" and body["iqn"] == IQN and body["remove_stores"] == STORES
    build = body["build"]
    assert build["store"] == {"plugin": "block", "name": "lvm-iscsi-vol1", "dev": "/dev/cinder-volumes/iscsi-vol1"}
    assert build["portal"] == {"ip": "10.252.20.10", "port": 3260} and build["lun"] == 1
    assert build["attributes"] == {"authentication": "1", "generate_node_acls": "0", "demo_mode_write_protect": "1"}
    assert build["acls"] == [
        {
            "initiator": "iqn.2026-11.dev.stacklab:lvm-iscsi:client1",
            "chap_userid": "lvm-iscsi-vol1",
            "chap_password": "s3cret-16-chars!",
        }
    ]
    # the secret goes into the stdin payload only: never the argv, never the display (logs, golden file)
    assert "s3cret" not in " ".join(request.argv()) and "s3cret" not in request.display()
    assert json.loads(request.display())["build"]["acls"][0]["chap_password"] == {"secret": "iscsi-chap-vol1"}


FAKE_RTSLIB = """
import json, os
STATE = json.loads(open(os.environ["LIO_STATE"]).read())
def log(*entry):
    with open(os.environ["LIO_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\\n")
class _Obj:
    def __init__(self, kind, name, plugin=""):
        self.kind, self.wwn, self.name, self.plugin = kind, name, name, plugin
    def delete(self):
        log("delete", self.kind, self.name)
class RTSRoot:
    targets = [_Obj("target", w) for w in STATE["targets"]]
    storage_objects = [_Obj("so", n, p) for n, p in STATE["stores"].items()]
    def save_to_file(self):
        log("save")
class FabricModule:
    def __init__(self, name):
        self.name = name
class Target:
    def __init__(self, fabric, wwn):
        log("target", fabric.name, wwn)
class TPG:
    def __init__(self, target, tag):
        log("tpg", tag)
    def set_attribute(self, name, value):
        log("attribute", name, value)
    def __setattr__(self, key, value):
        log("tpg." + key, value)
def BlockStorageObject(name, dev):
    log("block", name, dev)
    return name
def FileIOStorageObject(name, dev, size, write_back):
    log("fileio", name, dev, size, write_back)
    return name
def NetworkPortal(tpg, ip, port):
    log("portal", ip, port)
def LUN(tpg, lun, so):
    log("lun", lun, so)
    return "lun%d" % lun
class NodeACL:
    def __init__(self, tpg, wwn):
        self.__dict__["wwn"] = wwn
        log("acl", wwn)
    def __setattr__(self, key, value):
        log("acl." + key, self.wwn, value)
def MappedLUN(acl, index, lun, write_protect):
    log("mapped", acl.wwn, index, lun, write_protect)
"""


def run_tool(tmp_path: Path, payload: str, targets: list[str], stores: dict[str, str]) -> list[list[object]]:
    """LIO_TOOL against a stand-in rtslib_fb that logs each call: what the tool asks of rtslib, in order."""
    (tmp_path / "rtslib_fb.py").write_text(FAKE_RTSLIB)
    (tmp_path / "state.json").write_text(json.dumps({"targets": targets, "stores": stores}))
    log = tmp_path / "log.jsonl"
    log.unlink(missing_ok=True)
    env = {"PYTHONPATH": str(tmp_path), "LIO_LOG": str(log), "LIO_STATE": str(tmp_path / "state.json")}
    argv = [sys.executable, "-c", LIO_TOOL]
    done = subprocess.run(argv, input=payload, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_lio_tool_rebuilds_the_target_with_the_secret_from_stdin(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    plan = iscsi_layout(resource.id, resource.name, resource.spec, lab.name)
    payload = render_lio_request(plan, plan.targets[0], STORES).payload({chap_secret_name("vol1"): "pw with space"})
    other = "iqn.2003-01.org.linux-iscsi.other:sn.123"
    calls = run_tool(tmp_path, payload, [IQN, other], {"lvm-iscsi-vol1": "block", "foreign": "block"})
    initiator = "iqn.2026-11.dev.stacklab:lvm-iscsi:client1"
    assert calls == [
        ["delete", "target", IQN],  # the old copy, not the foreign target
        ["delete", "so", "lvm-iscsi-vol1"],  # the lab's backstore, not the foreign one
        ["block", "lvm-iscsi-vol1", "/dev/cinder-volumes/iscsi-vol1"],
        ["target", "iscsi", IQN],
        ["tpg", 1],
        ["portal", "10.252.20.10", 3260],
        ["lun", 1, "lvm-iscsi-vol1"],
        ["attribute", "authentication", "1"],
        ["attribute", "demo_mode_write_protect", "1"],
        ["attribute", "generate_node_acls", "0"],
        ["acl", initiator],
        ["mapped", initiator, 1, "lun1", False],
        ["acl.chap_userid", initiator, "lvm-iscsi-vol1"],
        ["acl.chap_password", initiator, "pw with space"],
        ["tpg.enable", True],
        ["save"],
    ]
    stores = {"lvm-iscsi-vol1": "block", "foreign": "block"}
    removal = removal_request(plan, IQN, stores).payload({})
    assert run_tool(tmp_path, removal, [IQN], stores) == [
        ["delete", "target", IQN],
        ["delete", "so", "lvm-iscsi-vol1"],  # only backstores named after the lab
        ["save"],
    ]


def test_file_backing_uses_fileio(lab: Lab, resource: Resource) -> None:
    spec = {**resource.spec, "targets": [{"name": "f1", "backing": "file", "size_mib": 64}]}
    plan = iscsi_layout(resource.id, resource.name, spec, lab.name)
    body = json.loads(render_lio_request(plan, plan.targets[0], {}).payload({chap_secret_name("f1"): "x"}))
    assert body["build"]["store"] == {
        "plugin": "fileio",
        "name": "lvm-iscsi-f1",
        "dev": "/var/lib/stacklab/iscsi/f1.img",
        "size": 64 * 1024 * 1024,
    }


def test_rbd_with_lio_is_a_plan_error(lab: Lab, resource: Resource) -> None:
    spec = {**resource.spec, "targets": [{"name": "r1", "backing": "rbd", "size_mib": 64}]}
    ceph_lab = lab.model_copy(update={"storage": lab.storage.model_copy(update={"ceph": _ceph()})})
    ceph_spec = next(r for r in expand(ceph_lab) if r.kind == "iscsi").spec  # the lab's Ceph gives the pool
    with pytest.raises(PlanError, match="kernel rbd module") as err:
        iscsi_layout(resource.id, resource.name, {**spec, "stores": ceph_spec["stores"]}, ceph_lab.name)
    assert "implementation: tgt" in str(err.value)


def _ceph() -> Ceph:

    return Ceph(mons=["storage1"], osds=[CephOsd(node="storage1")])


def test_parse_saveconfig_sample(lab: Lab, resource: Resource) -> None:
    parsed = parse_saveconfig(SAMPLE.read_text())
    assert sorted(parsed) == ["iqn.2003-01.org.linux-iscsi.other:sn.123", IQN]
    seen = parsed[IQN].seen
    assert seen.luns == {1: "/dev/cinder-volumes/iscsi-vol1"}
    assert seen.initiators == ("iqn.2026-11.dev.stacklab:lvm-iscsi:client1",)
    assert seen.chap_users == ("lvm-iscsi-vol1",)
    assert seen.portals == ("10.252.20.10:3260",)
    assert parsed[IQN].stores == {"lvm-iscsi-vol1": "block"}
    # Matches the plan: nothing to do, and the foreign target is ignored (not ours).
    plan = iscsi_layout(resource.id, resource.name, resource.spec, lab.name)
    from stacklab.drivers.storage.iscsi.types import TargetsSeen

    owned = {iqn: t.seen for iqn, t in parsed.items() if plan.owns(iqn)}
    assert drift_of(plan, TargetsSeen(owned)) == ()
    assert parse_saveconfig("{broken") == {}


def test_no_configfs_is_a_plan_error(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = lio_node(configfs=False)
    with pytest.raises(PlanError, match="no configfs") as err:
        IscsiDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))
    assert "implementation: tgt" in str(err.value) and "kind: vm" in str(err.value)
    assert not [c for c in node.calls if c[0] in (PYTHON, "lvcreate")]


def test_no_target_core_is_a_plan_error(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = lio_node()
    node.dirs.discard("/sys/kernel/config/target")
    with pytest.raises(PlanError, match="target_core_mod"):
        LioBackend().check_node(node, iscsi_layout(resource.id, resource.name, resource.spec, lab.name), resource.id)


def test_apply_runs_the_tool_then_second_up_plans_nothing(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = lio_node()
    saved = SAMPLE.read_text()

    def tool(argv: tuple[str, ...]) -> CommandResult:
        node.files[SAVECONFIG] = saved  # what rtslib would save for the state just built
        return CommandResult(argv, 0, "", "", 0.0)

    node.expect([PYTHON, "-c", LIO_TOOL], responder=tool)
    ctx = ctx_for(lab, node, tmp_path)
    driver = IscsiDriver()
    outputs = driver.apply(Change(resource, Action.CREATE), ctx)

    plan = iscsi_layout(resource.id, resource.name, resource.spec, lab.name)
    secret = (tmp_path / "secrets" / chap_secret_name("vol1")).read_text().strip()
    runs = [i for a, i in node.inputs if a[:2] == (PYTHON, "-c")]
    assert runs == [render_lio_request(plan, plan.targets[0], STORES).payload({chap_secret_name("vol1"): secret})]
    assert (
        "lvcreate",
        "--yes",
        "--name",
        "iscsi-vol1",
        "--size",
        "1024m",
        "--addtag",
        "stacklab_lvm-iscsi",
        "cinder-volumes",
    ) in node.calls
    assert ("systemctl", "enable", "rtslib-fb-targetctl.service") in node.calls
    assert not any(secret in " ".join(c) for c in node.calls)
    assert outputs["targets"]["vol1"]["path"] == "/dev/cinder-volumes/iscsi-vol1"

    node.dirs.add(f"/sys/kernel/config/target/iscsi/{IQN}")
    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.drift == ()
    recorded = {"hash": resource.hash, "spec": dict(resource.spec), "outputs": outputs}
    assert driver.diff(resource, observed, recorded).action is Action.NOOP


def test_observe_flags_saved_but_not_live(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = lio_node()
    node.files[SAVECONFIG] = SAMPLE.read_text()
    observed = IscsiDriver().observe(resource, ctx_for(lab, node, tmp_path))
    assert observed is not None
    assert observed.drift[0] == f"target {IQN} is saved but not live in /sys/kernel/config/target"
    # the port filter was never installed on this fake node either
    assert observed.drift[1:] == (
        "/etc/stacklab/nftables/iscsi.nft missing or different",
        "stacklab-filter-iscsi.service missing or different",
        "nftables table stacklab_iscsi is not loaded",
    )


def test_delete_removes_target_backstore_and_lv(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = lio_node()
    node.files[SAVECONFIG] = SAMPLE.read_text()
    node.expect([PYTHON, "-c", LIO_TOOL])
    node.rules.insert(0, node.rules.pop())
    node.expect(["lvs", "cinder-volumes/iscsi-vol1"], rc=0)
    node.rules.insert(0, node.rules.pop())
    node.expect(["lvremove"])
    recorded = {"name": "storage1", "spec": dict(resource.spec), "outputs": {"targets": {}}}
    IscsiDriver().delete(resource.id, recorded, ctx_for(lab, node, tmp_path))
    runs = [json.loads(i or "") for a, i in node.inputs if a[:2] == (PYTHON, "-c")]
    assert runs == [{"op": "remove", "iqn": IQN, "remove_stores": STORES}]
    assert ("lvremove", "--yes", "cinder-volumes/iscsi-vol1") in node.calls


def test_sample_is_valid_json() -> None:
    assert json.loads(SAMPLE.read_text())["targets"][0]["wwn"] == IQN


def test_lio_pinned_on_a_vm_node_is_not_judged_by_the_host() -> None:
    """labs/kernel.yml pins lio and knfsd on a VM node: the host (no configfs, no nfsd) cannot judge them, the VM's
    kernel can (check_node asks it), so they are not host pins; on a container node they still are."""
    from stacklab.session import lab_pins

    kernel = load_lab_text((LABS / "kernel.yml").read_text(), "kernel.yml")
    assert kernel.nodes["storage1"].kind == "vm"
    assert lab_pins(kernel) == {}
    container = kernel.nodes["storage1"].model_copy(update={"kind": "container"})
    in_container = kernel.model_copy(update={"nodes": {**kernel.nodes, "storage1": container}})
    assert lab_pins(in_container) == {"iscsi_target": "lio", "nfs_server": "knfsd"}
