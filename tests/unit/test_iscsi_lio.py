"""LIO backend: golden targetcli command list, the saveconfig.json parser, PlanErrors (no configfs, rbd), and the
role driver's apply/observe/delete against a fake node. LIO cannot run on the CI host (no configfs, no modules),
so these tests are its proof here.

`tests/golden/storage/lio-saveconfig.sample.json` is hand-written in the format of rtslib-fb 2.1.75's
`RTSRoot.dump()` (what `targetcli saveconfig` writes): storage_objects with plugin/name/dev, targets with tpgs,
luns (storage_object paths), portals and node_acls carrying chap_userid/chap_password.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.storage.iscsi.driver import IscsiDriver, plan_iscsi
from stacklab.drivers.storage.iscsi.lio import (
    CHAP_HELPER,
    PYTHON,
    SAVECONFIG,
    LioBackend,
    parse_saveconfig,
    render_lio_commands,
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


@pytest.fixture
def lab() -> Lab:
    return load_lab_text((LABS / "lvm-iscsi.yml").read_text(), "lvm-iscsi.yml")


@pytest.fixture
def resource(lab: Lab) -> Resource:
    iscsi = next(r for r in expand(lab) if r.kind == "iscsi")
    return Resource(iscsi.kind, iscsi.name, {**iscsi.spec, "implementation": "lio"}, iscsi.deps)


def lio_node(*, configfs: bool = True) -> FakeNode:
    node = FakeNode(files={"/usr/bin/targetcli": "", "/proc/filesystems": ""})
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


def test_command_list_golden(lab: Lab, resource: Resource) -> None:
    plan = plan_iscsi(resource.id, resource.name, resource.spec, lab)
    check_golden("storage/lio-targetcli.txt", render_lio_script(plan))
    cmds = render_lio_commands(plan, plan.targets[0])
    assert cmds[0].argv() == [
        "targetcli",
        "/backstores/block",
        "create",
        "name=lvm-iscsi-vol1",
        "dev=/dev/cinder-volumes/iscsi-vol1",
    ]
    assert ["targetcli", f"/iscsi/{IQN}/tpg1/portals", "create", "ip_address=10.252.20.10", "ip_port=3260"] in [
        c.argv() for c in cmds
    ]
    auth = [c for c in cmds if c.secret]
    # CHAP through rtslib-fb: the IQNs and the user on argv, the secret on stdin only
    assert [c.argv() for c in auth] == [
        [PYTHON, "-c", CHAP_HELPER, IQN, "iqn.2026-11.dev.stacklab:lvm-iscsi:client1", "lvm-iscsi-vol1"]
    ]
    assert auth[0].secret == chap_secret_name("vol1")


def test_chap_helper_sets_the_acl_account_from_stdin(tmp_path: Path) -> None:
    """CHAP_HELPER run against a stand-in rtslib_fb: the secret read from stdin, byte for byte, becomes the ACL's
    chap_password (what rtslib writes into configfs), the user its chap_userid; an empty stdin is refused."""
    fake = tmp_path / "rtslib_fb.py"
    fake.write_text(
        "import json, os\n"
        "class FabricModule:\n    def __init__(self, name): assert name == 'iscsi'\n"
        "class Target:\n    def __init__(self, fabric, wwn, mode): assert mode == 'lookup'; self.wwn = wwn\n"
        "class TPG:\n    def __init__(self, target, tag, mode): assert (tag, mode) == (1, 'lookup'); self.t = target\n"
        "class NodeACL:\n"
        "    def __init__(self, tpg, wwn, mode): assert mode == 'lookup'; self.__dict__['seen'] = [tpg.t.wwn, wwn]\n"
        "    def __setattr__(self, key, value):\n"
        "        self.seen.append([key, value])\n"
        "        open(os.environ['OUT'], 'w').write(json.dumps(self.seen))\n"
    )
    import subprocess
    import sys

    out = tmp_path / "out.json"
    argv = [sys.executable, "-c", CHAP_HELPER, IQN, "iqn.x:client1", "user1"]
    env = {"PYTHONPATH": str(tmp_path), "OUT": str(out)}
    done = subprocess.run(argv, input="s3cret with space", env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == [
        IQN,
        "iqn.x:client1",
        ["chap_userid", "user1"],
        ["chap_password", "s3cret with space"],
    ]
    empty = subprocess.run(argv, input="", env=env, capture_output=True, text=True, check=False)
    assert empty.returncode != 0 and "no CHAP secret" in empty.stderr


def test_file_backing_uses_fileio(lab: Lab, resource: Resource) -> None:
    spec = {**resource.spec, "targets": [{"name": "f1", "backing": "file", "size_mib": 64}]}
    plan = plan_iscsi(resource.id, resource.name, spec, lab)
    first = render_lio_commands(plan, plan.targets[0])[0]
    assert first.args == (
        "/backstores/fileio",
        "create",
        "name=lvm-iscsi-f1",
        "file_or_dev=/var/lib/stacklab/iscsi/f1.img",
        "size=64M",
        "sparse=true",
        "write_back=false",
    )


def test_rbd_with_lio_is_a_plan_error(lab: Lab, resource: Resource) -> None:
    spec = {**resource.spec, "targets": [{"name": "r1", "backing": "rbd", "size_mib": 64}]}
    ceph_lab = lab.model_copy(update={"storage": lab.storage.model_copy(update={"ceph": _ceph()})})
    with pytest.raises(PlanError, match="kernel rbd module") as err:
        plan_iscsi(resource.id, resource.name, spec, ceph_lab)
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
    plan = plan_iscsi(resource.id, resource.name, resource.spec, lab)
    from stacklab.drivers.storage.iscsi.types import TargetsSeen

    owned = {iqn: t.seen for iqn, t in parsed.items() if plan.owns(iqn)}
    assert drift_of(plan, TargetsSeen(owned)) == ()
    assert parse_saveconfig("{broken") == {}


def test_no_configfs_is_a_plan_error(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = lio_node(configfs=False)
    with pytest.raises(PlanError, match="no configfs") as err:
        IscsiDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))
    assert "implementation: tgt" in str(err.value) and "kind: vm" in str(err.value)
    assert not [c for c in node.calls if c[0] in ("targetcli", PYTHON, "lvcreate")]


def test_no_target_core_is_a_plan_error(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = lio_node()
    node.dirs.discard("/sys/kernel/config/target")
    with pytest.raises(PlanError, match="target_core_mod"):
        LioBackend().check_node(node, plan_iscsi(resource.id, resource.name, resource.spec, lab), resource.id)


def test_apply_runs_targetcli_then_second_up_plans_nothing(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = lio_node()
    saved = SAMPLE.read_text()

    def targetcli(argv: tuple[str, ...]) -> CommandResult:
        if argv[1:] == ("saveconfig",):
            node.files[SAVECONFIG] = saved  # what rtslib would dump for the state just built
        return CommandResult(argv, 0, "", "", 0.0)

    node.expect(["targetcli"], responder=targetcli)
    node.expect([PYTHON, "-c", CHAP_HELPER])
    ctx = ctx_for(lab, node, tmp_path)
    driver = IscsiDriver()
    outputs = driver.apply(Change(resource, Action.CREATE), ctx)

    plan = plan_iscsi(resource.id, resource.name, resource.spec, lab)
    ran = [c for c in node.calls if c[0] in ("targetcli", PYTHON)]
    expected = [c.argv() for c in render_lio_commands(plan, plan.targets[0])]
    assert [list(c) for c in ran[2:-1]] == expected  # after the two clean-up deletes, before saveconfig
    assert ran[:2] == [
        ("targetcli", "/iscsi", "delete", f"wwn={IQN}"),
        ("targetcli", "/backstores/block", "delete", "name=lvm-iscsi-vol1"),
    ]
    assert ran[-1] == ("targetcli", "saveconfig")
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
    secret = (tmp_path / "secrets" / chap_secret_name("vol1")).read_text().strip()
    assert not any(secret in " ".join(c) for c in node.calls)
    assert [i for a, i in node.inputs if a[0] == PYTHON] == [secret]
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
    node.expect(["targetcli"])
    node.rules.insert(0, node.rules.pop())
    node.expect(["lvs", "cinder-volumes/iscsi-vol1"], rc=0)
    node.rules.insert(0, node.rules.pop())
    node.expect(["lvremove"])
    recorded = {"name": "storage1", "spec": dict(resource.spec), "outputs": {"targets": {}}}
    IscsiDriver().delete(resource.id, recorded, ctx_for(lab, node, tmp_path))
    assert [c for c in node.calls if c[0] == "targetcli"] == [
        ("targetcli", "/iscsi", "delete", f"wwn={IQN}"),
        ("targetcli", "/backstores/block", "delete", "name=lvm-iscsi-vol1"),
        ("targetcli", "saveconfig"),
    ]
    assert ("lvremove", "--yes", "cinder-volumes/iscsi-vol1") in node.calls


def test_sample_is_valid_json() -> None:
    assert json.loads(SAMPLE.read_text())["targets"][0]["wwn"] == IQN
