"""LVM driver against a fake node: exact argv of every step, the device-mapper PlanError, observe/diff/delete.

LVM cannot run on the CI host (no device-mapper), so these tests are its proof here. `FakeNode` (also used by the
iSCSI and NFS driver tests, since lvm.py holds the node-file helpers they share) is a FakeRunner that keeps the
files a node would have: `install -D ... /dev/stdin PATH` stores stdin, `cat`, `sha256sum`, `test`, `rm -f`
and `mkdir -p` read or change them; every other command must be scripted with `expect()`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext, driver_for
from stacklab.drivers.storage.lvm.driver import LvmDriver, LvmSpec, parse_lvm_report, render_loop_unit
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult, checked
from stacklab.model.errors import LabError
from stacklab.model.lab import Lab
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Change, Resource
from tests.golden_util import check_golden

LABS = Path(__file__).resolve().parents[2] / "labs"


@dataclass
class FakeNode(FakeRunner):
    """A FakeRunner with a small file system; scripted rules win over the built-in file commands."""

    files: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/run/systemd/system"})
    devices: set[str] = field(default_factory=set)
    inputs: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> CommandResult:
        args = tuple(str(a) for a in argv)
        assert timeout > 0
        self.inputs.append((args, input))
        if any(args[: len(r.prefix)] == r.prefix and r.times != 0 for r in self.rules):
            return super().run(args, timeout=timeout, check=check, input=input)
        builtin = self._builtin(args, input)
        if builtin is None:
            return super().run(args, timeout=timeout, check=check, input=input)
        self.calls.append(args)
        return checked(builtin, check)

    def _builtin(self, args: tuple[str, ...], stdin: str | None) -> CommandResult | None:
        def res(rc: int = 0, out: str = "") -> CommandResult:
            return CommandResult(args, rc, out, "" if rc == 0 else "No such file or directory", 0.0)

        cmd = args[0]
        if cmd == "install" and args[-2] == "/dev/stdin":
            self.files[args[-1]] = stdin or ""
            return res()
        if cmd == "cat" and len(args) == 2:
            return res(0, self.files[args[1]]) if args[1] in self.files else res(1)
        if cmd == "sha256sum":
            if args[1] not in self.files:
                return res(1)
            return res(0, hashlib.sha256(self.files[args[1]].encode()).hexdigest() + "  " + args[1] + "\n")
        if cmd == "test" and len(args) == 3:
            flag, path = args[1], args[2]
            present = {
                "-e": path in self.files or path in self.dirs or path in self.devices,
                "-d": path in self.dirs,
                "-c": path in self.devices,
                "-x": path in self.files or path in self.devices,
            }.get(flag)
            return None if present is None else res(0 if present else 1)
        if cmd == "install" and args[1] == "-d":
            self.dirs.add(args[-1])
            return res()
        if args[:2] == ("/usr/sbin/nft", "list") and args[2:4] == ("table", "inet"):
            # A table counts as loaded while a rules file defining it exists (its unit loads it at start).
            loaded = any(f"table inet {args[4]} {{" in text for text in self.files.values())
            return res(0 if loaded else 1)
        if args[:4] == ("/usr/sbin/nft", "delete", "table", "inet"):
            return res()
        if cmd == "rm" and args[1] == "-f":
            for path in args[2:]:
                self.files.pop(path, None)
            return res()
        if cmd == "mkdir" and args[1] == "-p":
            self.dirs.update(args[2:])
            return res()
        return None

    def written(self, path: str) -> bool:
        return any(a[:2] == ("install", "-D") and a[-1] == path for a, _ in self.inputs)


def ctx_for(lab: Lab, runner: FakeRunner, state_dir: Path) -> DriverContext:
    return DriverContext(lab=lab, runner=FakeRunner(), state_dir=state_dir, node_runner=lambda _node: runner)


# --- fixtures -----------------------------------------------------------------------------------------------

VG = "cinder-volumes"
FILE = f"/var/lib/stacklab/lvm/{VG}.img"
UNIT_PATH = "/etc/systemd/system/stacklab-loop-cinder-volumes.service"


@pytest.fixture
def lab() -> Lab:
    return load_lab_text((LABS / "lvm-iscsi.yml").read_text(), "lvm-iscsi.yml")


@pytest.fixture
def resource(lab: Lab) -> Resource:
    return next(r for r in expand(lab) if r.kind == "lvm")


def vgs_json(tags: str = "stacklab_lvm-iscsi") -> str:
    row = {"vg_name": VG, "vg_tags": tags, "vg_size": "8188.00", "pv_count": "1", "lv_count": "0"}
    return json.dumps({"report": [{"vg": [row]}]})


def dm_ok(node: FakeNode) -> FakeNode:
    node.devices.add("/dev/mapper/control")
    node.expect(["dmsetup", "version"], stdout="Library version:   1.02.185\nDriver version:    4.48.0\n")
    return node


# --- tests --------------------------------------------------------------------------------------------------


def test_spec_and_unit_golden(resource: Resource) -> None:
    assert resource.id == "lvm/storage1"
    spec = LvmSpec.from_spec("lvm-iscsi", resource.name, resource.spec)
    assert (spec.file, spec.unit, spec.tag) == (FILE, "stacklab-loop-cinder-volumes.service", "stacklab_lvm-iscsi")
    check_golden("storage/lvm-loop.service", render_loop_unit(spec))


def test_registered() -> None:
    assert isinstance(driver_for("lvm"), LvmDriver)


def test_apply_fresh_node_exact_commands(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = dm_ok(FakeNode())
    node.expect(["vgs"], rc=5, stderr=f'Volume group "{VG}" not found', times=1)
    node.expect(["losetup", "--list", "--associated", FILE], stdout="")
    node.expect(["truncate", "--size", "8192M", FILE])
    node.expect(["losetup", "--find", "--show", FILE], stdout="/dev/loop3\n")
    node.expect(["pvs", "/dev/loop3"], rc=5)
    node.expect(["pvcreate", "--yes", "/dev/loop3"])
    node.expect(["vgcreate"])
    node.expect(["systemctl"])
    out = LvmDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))

    assert out == {
        "vg": VG,
        "loop": "/dev/loop3",
        "file": FILE,
        "unit": "stacklab-loop-cinder-volumes.service",
        "node": "storage1",
    }
    assert ("truncate", "--size", "8192M", FILE) in node.calls
    assert ("vgcreate", "--yes", "--addtag", "stacklab_lvm-iscsi", VG, "/dev/loop3") in node.calls
    assert node.files[UNIT_PATH] == render_loop_unit(LvmSpec("lvm-iscsi", "storage1", VG, 8192))
    assert ("systemctl", "daemon-reload") in node.calls
    assert ("systemctl", "enable", "stacklab-loop-cinder-volumes.service") in node.calls
    # The dm check ran before anything was created.
    first_change = min(i for i, c in enumerate(node.calls) if c[0] in ("truncate", "losetup", "mkdir"))
    assert node.calls.index(("dmsetup", "version")) < first_change


def test_apply_again_is_idempotent(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    spec = LvmSpec("lvm-iscsi", "storage1", VG, 8192)
    node = dm_ok(FakeNode(files={FILE: "", UNIT_PATH: render_loop_unit(spec)}))
    node.expect(["vgs"], stdout=vgs_json())
    node.expect(["losetup", "--list", "--associated", FILE], stdout="/dev/loop3\n")
    node.expect(["systemctl", "enable"])
    LvmDriver().apply(Change(resource, Action.UPDATE), ctx_for(lab, node, tmp_path))
    assert not [c for c in node.calls if c[0] in ("truncate", "pvcreate", "vgcreate", "install")]
    assert ("losetup", "--find", "--show", FILE) not in node.calls


def test_no_device_mapper_is_a_plan_error(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    # The CI host: /dev/mapper/control exists, but the kernel has no dm driver behind it.
    node = FakeNode(devices={"/dev/mapper/control"})
    node.expect(
        ["dmsetup", "version"],
        rc=1,
        stdout="Library version:   1.02.185 (2022-05-18)\n",
        stderr="/dev/mapper/control: open failed: No such device\nCommand failed.\n",
    )
    with pytest.raises(PlanError) as err:
        LvmDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))
    text = str(err.value)
    assert "open failed: No such device" in text
    for alternative in ("backing: file", "Ceph RBD", "kind: vm"):
        assert alternative in text
    assert node.calls == [("test", "-c", "/dev/mapper/control"), ("dmsetup", "version")]


def test_missing_control_node_is_a_plan_error(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = FakeNode()
    with pytest.raises(PlanError, match="/dev/mapper/control is missing"):
        LvmDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))


def test_foreign_vg_is_refused(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = dm_ok(FakeNode())
    node.expect(["vgs"], stdout=vgs_json(tags=""))
    node.expect(["losetup", "--list", "--associated", FILE], stdout="/dev/loop7\n")
    with pytest.raises(PlanError, match="without the lab's tag"):
        LvmDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))
    obs = LvmDriver().observe(resource, ctx_for(lab, node, tmp_path))
    assert obs is not None and not obs.owned


def test_observe_and_second_up_plans_nothing(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    spec = LvmSpec("lvm-iscsi", "storage1", VG, 8192)
    node = FakeNode(files={FILE: "", UNIT_PATH: render_loop_unit(spec)})
    node.expect(["vgs"], stdout=vgs_json())
    node.expect(["losetup", "--list", "--associated", FILE], stdout="/dev/loop3\n")
    driver = LvmDriver()
    observed = driver.observe(resource, ctx_for(lab, node, tmp_path))
    assert observed is not None and observed.owned and observed.drift == ()
    assert observed.facts["loops"] == ["/dev/loop3"]
    recorded = {"hash": resource.hash, "spec": dict(resource.spec)}
    assert driver.diff(resource, observed, recorded).action is Action.NOOP


def test_observe_reports_missing_unit_and_loop(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = FakeNode()
    node.expect(["vgs"], stdout=vgs_json())
    node.expect(["losetup", "--list", "--associated", FILE], stdout="")
    observed = LvmDriver().observe(resource, ctx_for(lab, node, tmp_path))
    assert observed is not None
    assert len(observed.drift) == 2


def test_observe_absent_vg_and_unreachable_node(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = FakeNode()
    node.expect(["vgs"], rc=5)
    assert LvmDriver().observe(resource, ctx_for(lab, node, tmp_path)) is None

    def down(_node: str) -> FakeRunner:
        raise StackLabError("node storage1 is not up")

    ctx = DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path, node_runner=down)
    assert LvmDriver().observe(resource, ctx) is None


def test_delete_removes_everything_in_order(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    spec = LvmSpec("lvm-iscsi", "storage1", VG, 8192)
    node = FakeNode(files={FILE: "", UNIT_PATH: render_loop_unit(spec)})
    node.expect(["vgs"], stdout=vgs_json())
    node.expect(["losetup", "--list", "--associated", FILE], stdout="/dev/loop3\n")
    lvs = {"report": [{"lv": [{"lv_name": "iscsi-vol1", "lv_tags": "stacklab_lvm-iscsi"}]}]}
    node.expect(["lvs", "--reportformat", "json"], stdout=json.dumps(lvs))
    node.expect(["lvremove"]).expect(["vgremove"]).expect(["pvremove"]).expect(["losetup", "--detach"])
    node.expect(["systemctl"])
    recorded = {"name": "storage1", "spec": dict(resource.spec), "outputs": {}}
    LvmDriver().delete(resource.id, recorded, ctx_for(lab, node, tmp_path))
    order = [c for c in node.calls if c[0] in ("lvremove", "vgremove", "pvremove", "losetup", "rm")]
    assert order[1:6] == [
        ("lvremove", "--yes", f"{VG}/iscsi-vol1"),
        ("vgremove", "--yes", VG),
        ("pvremove", "--yes", "/dev/loop3"),
        ("losetup", "--detach", "/dev/loop3"),
        ("rm", "-f", FILE),
    ]
    assert UNIT_PATH not in node.files and FILE not in node.files
    assert ("systemctl", "disable", "stacklab-loop-cinder-volumes.service") in node.calls


def test_delete_refuses_untagged_vg(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node = FakeNode()
    node.expect(["vgs"], stdout=vgs_json(tags="someone_else"))
    node.expect(["losetup", "--list", "--associated", FILE], stdout="")
    with pytest.raises(StackLabError, match="lacks the lab's tag"):
        LvmDriver().delete(resource.id, {"spec": dict(resource.spec)}, ctx_for(lab, node, tmp_path))
    assert not [c for c in node.calls if c[0] in ("vgremove", "lvremove", "rm")]


def test_parse_lvm_report_tolerates_garbage() -> None:
    assert parse_lvm_report("not json", "vg") == []
    assert parse_lvm_report(vgs_json(), "vg")[0]["vg_tags"] == "stacklab_lvm-iscsi"


# --- the VG on the node's own disk (storage.lvm.disk) -------------------------------------------------------

DISK = "/dev/disk/by-id/virtio-pv0"


def on_disk_lab(lvm: str = "{node: storage1, vg: cinder-volumes, disk: pv0}", kind: str = "vm") -> str:
    text = (LABS / "lvm-iscsi.yml").read_text()
    text = text.replace("  lvm: {node: storage1, vg: cinder-volumes, size: 8GiB}", f"  lvm: {lvm}")
    return text.replace("    kind: vm\n", f"    kind: {kind}\n", 1)


@pytest.fixture
def disk_lab() -> Lab:
    return load_lab_text(on_disk_lab(), "lvm-disk.yml")


@pytest.fixture
def disk_resource(disk_lab: Lab) -> Resource:
    return next(r for r in expand(disk_lab) if r.kind == "lvm")


def pvs_json(pv: str = "/dev/vdb", vg: str = VG) -> str:
    return json.dumps({"report": [{"pv": [{"pv_name": pv, "vg_name": vg}]}]})


def test_on_disk_spec_names_the_disk_by_its_serial_and_no_file(disk_resource: Resource) -> None:
    assert dict(disk_resource.spec) == {"vg": VG, "disk": DISK, "implementation": "lvm"}


def test_on_disk_apply_makes_the_disk_the_one_pv(disk_lab: Lab, disk_resource: Resource, tmp_path: Path) -> None:
    node = dm_ok(FakeNode())
    node.expect(["vgs"], rc=5, stderr=f'Volume group "{VG}" not found', times=1)
    node.expect(["readlink", "-e", DISK], stdout="/dev/vdb\n")
    node.expect(["pvs", "/dev/vdb"], rc=5)
    node.expect(["pvcreate", "--yes", "/dev/vdb"]).expect(["vgcreate"])
    out = LvmDriver().apply(Change(disk_resource, Action.CREATE), ctx_for(disk_lab, node, tmp_path))
    assert out == {"vg": VG, "disk": DISK, "device": "/dev/vdb", "node": "storage1"}
    assert ("vgcreate", "--yes", "--addtag", "stacklab_lvm-iscsi", VG, "/dev/vdb") in node.calls
    # No loop file, no loop device, no boot unit: LVM activates the VG from the disk itself.
    assert not [c for c in node.calls if c[0] in ("truncate", "losetup", "systemctl", "install")]


def test_on_disk_apply_without_the_disk_fails_before_touching_anything(
    disk_lab: Lab, disk_resource: Resource, tmp_path: Path
) -> None:
    node = dm_ok(FakeNode())
    node.expect(["vgs"], rc=5, times=1)
    node.expect(["readlink", "-e", DISK], rc=1)
    with pytest.raises(StackLabError, match="has no disk /dev/disk/by-id/virtio-pv0"):
        LvmDriver().apply(Change(disk_resource, Action.CREATE), ctx_for(disk_lab, node, tmp_path))
    assert not [c for c in node.calls if c[0] in ("pvcreate", "vgcreate")]


def test_on_disk_observe_is_drift_when_the_vg_is_not_on_the_disk(
    disk_lab: Lab, disk_resource: Resource, tmp_path: Path
) -> None:
    node = FakeNode()
    node.expect(["vgs"], stdout=vgs_json())
    node.expect(["pvs", "--reportformat", "json"], stdout=pvs_json())
    node.expect(["readlink", "-e", DISK], stdout="/dev/vdb\n")
    observed = LvmDriver().observe(disk_resource, ctx_for(disk_lab, node, tmp_path))
    assert observed is not None and observed.owned and observed.drift == ()
    moved = FakeNode()
    moved.expect(["vgs"], stdout=vgs_json())
    moved.expect(["pvs", "--reportformat", "json"], stdout=pvs_json(pv="/dev/loop0"))
    moved.expect(["readlink", "-e", DISK], stdout="/dev/vdb\n")
    observed = LvmDriver().observe(disk_resource, ctx_for(disk_lab, moved, tmp_path))
    assert observed is not None and "are not the disk" in observed.drift[0]


def test_on_disk_delete_removes_the_vg_and_the_pv_label(disk_lab: Lab, disk_resource: Resource, tmp_path: Path) -> None:
    node = FakeNode()
    node.expect(["vgs"], stdout=vgs_json())
    node.expect(["lvs", "--reportformat", "json"], stdout=json.dumps({"report": [{"lv": []}]}))
    node.expect(["vgremove"]).expect(["readlink", "-e", DISK], stdout="/dev/vdb\n").expect(["pvremove"])
    recorded = {"name": "storage1", "spec": dict(disk_resource.spec), "outputs": {}}
    LvmDriver().delete(disk_resource.id, recorded, ctx_for(disk_lab, node, tmp_path))
    changes = [c for c in node.calls if c[0] in ("vgremove", "pvremove", "losetup", "rm", "systemctl")]
    assert changes == [("vgremove", "--yes", VG), ("pvremove", "--yes", "/dev/vdb")]


@pytest.mark.parametrize(
    ("lvm", "kind", "message"),
    [
        (
            "{node: storage1, disk: pv9}",
            "vm",
            "lvm-disk.yml:21:25: storage.lvm.disk: node 'storage1' has no disk 'pv9'",
        ),
        (
            "{node: storage1, disk: pv0}",
            "container",
            "lvm-disk.yml:21:25: storage.lvm.disk: node 'storage1' is a contai",
        ),
        ("{node: storage1, disk: pv0, size: 1GiB}", "vm", "storage.lvm.size: size and disk both say how large"),
    ],
)
def test_on_disk_bad_input_is_refused_with_its_line(lvm: str, kind: str, message: str) -> None:
    with pytest.raises(LabError) as err:
        load_lab_text(on_disk_lab(lvm, kind), "lvm-disk.yml")
    assert message in str(err.value)
