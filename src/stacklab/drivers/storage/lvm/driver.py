"""The `lvm` resource: an LVM volume group on a storage node (resource `lvm/<node>`), on the node's own disk or
on a loop-backed file.

With spec `disk` (`storage.lvm.disk`, a VM node's data disk by its stable `/dev/disk/by-id/virtio-<serial>`
path) the disk is the VG's one PV, as on a real storage host: no file, no loop, nothing to re-attach at boot (LVM
activates the VG from the disk). Otherwise, on the node: a sparse backing file `/var/lib/stacklab/lvm/<vg>.img`
(spec `size_mib`), a loop device attached with `losetup --find --show`, a PV on it and the VG (spec `vg`); where
the node runs systemd, a oneshot unit `stacklab-loop-<vg>.service` re-attaches the file at boot before LVM
activation, so the VG survives a reboot. Either way the VG is tagged `stacklab_<lab>` (the ownership mark:
`delete` and `observe` never touch a VG without it). The iSCSI driver and cinder create their LVs in this VG.

LVM needs device-mapper in the node's kernel. Containers share the host kernel, and the CI host has none, so
`apply` checks `/dev/mapper/control` and `dmsetup version` first and raises PlanError naming the alternatives.
On the CI host this driver is therefore proven by unit tests only (tests/unit/test_lvm.py); it runs for real on
a workstation / bare-metal runner or in a VM storage node with its own kernel.

Every command runs on the node through `ctx.on_node(node)` as an argv list with a timeout, and every step
checks whether it is already done, so `apply` can be re-run after a failure. If `apply` fails half-way, what
exists carries the lab's mark (file name, VG tag, unit name) and `delete` removes it.

This module also holds the small node-file helpers the storage drivers share (write a file through stdin only
when its content changed, read one, ask whether the node runs systemd).
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stacklab.drivers.base import BaseDriver, Driver, DriverContext, recorded_spec, register
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.node_files import FILE_TIMEOUT, node_has_systemd, node_path_exists, systemctl, write_node_file
from stacklab.exec.runner import Runner
from stacklab.plan.resource import Change, Observed, Resource

LOG = logging.getLogger(__name__)

LVM_TIMEOUT = 60.0

LVM_DIR = "/var/lib/stacklab/lvm"
UNIT_DIR = "/etc/systemd/system"

NO_DM_HINT = (
    "LVM needs device-mapper in the node's kernel, and this node shares a kernel without it. Use file-backed "
    "iSCSI LUNs (`backing: file`), Ceph RBD (`backing: rbd`, storage.ceph), or make the storage node a VM "
    "(`kind: vm`) so it has its own kernel"
)


def lab_tag(lab: str) -> str:
    """LVM tag marking the lab's VGs and LVs (tags allow [A-Za-z0-9_+.-])."""
    return f"stacklab_{lab}"


# --- device-mapper check -------------------------------------------------------------------------------------


def check_device_mapper(runner: Runner, resource_id: str) -> None:
    """Raise PlanError unless the node can use device-mapper (/dev/mapper/control and `dmsetup version`)."""
    control = runner.run(["test", "-c", "/dev/mapper/control"], timeout=FILE_TIMEOUT, check=False)
    version = runner.run(["dmsetup", "version"], timeout=FILE_TIMEOUT, check=False) if control.ok else None
    if control.ok and version is not None and version.ok and "Driver version" in version.stdout:
        return
    if not control.ok:
        why = "/dev/mapper/control is missing"
    else:
        assert version is not None
        why = "`dmsetup version` cannot reach the kernel driver: " + (
            version.stderr.strip().splitlines()[0] if version.stderr.strip() else f"exit code {version.returncode}"
        )
    raise PlanError(f"the node has no usable device-mapper ({why})", resource=resource_id, hint=NO_DM_HINT)


# --- the volume group ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LvmSpec:
    lab: str
    node: str
    vg: str
    size_mib: int  # the loop-backed file's size; 0 with `disk`
    disk: str | None = None  # the node's own disk as the one PV (a stable /dev/disk/by-id path), or None: a file

    @classmethod
    def from_spec(cls, lab: str, node: str, spec: Mapping[str, Any]) -> LvmSpec:
        disk = spec.get("disk")
        return cls(
            lab=lab,
            node=node,
            vg=str(spec["vg"]),
            size_mib=int(spec.get("size_mib", 0)),
            disk=str(disk) if disk else None,
        )

    @property
    def file(self) -> str:
        return f"{LVM_DIR}/{self.vg}.img"

    @property
    def unit(self) -> str:
        return f"stacklab-loop-{self.vg}.service"

    @property
    def unit_path(self) -> str:
        return f"{UNIT_DIR}/{self.unit}"

    @property
    def tag(self) -> str:
        return lab_tag(self.lab)


def render_loop_unit(spec: LvmSpec) -> str:
    """Pure: the oneshot unit that re-attaches the VG's backing file at boot, before LVM activation."""
    file = spec.file
    return (
        f"# stacklab lab={spec.lab}: re-attach the loop device of LVM volume group {spec.vg} at boot\n"
        "[Unit]\n"
        f"Description=stacklab {spec.lab}: loop device for LVM volume group {spec.vg}\n"
        "DefaultDependencies=no\n"
        "After=local-fs.target systemd-udevd.service\n"
        "Before=lvm2-activation-early.service lvm2-activation.service lvm2-monitor.service\n"
        f"ConditionPathExists={file}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart=/sbin/losetup --find --show {shlex.quote(file)}\n"
        f"ExecStartPost=/sbin/vgchange --activate y {shlex.quote(spec.vg)}\n"
        "\n"
        "[Install]\n"
        "WantedBy=local-fs.target\n"
    )


def loops_of(runner: Runner, file: str) -> list[str]:
    """Loop devices attached to `file` on the node (`losetup --associated`)."""
    result = runner.run(
        ["losetup", "--list", "--associated", file, "--noheadings", "--output", "NAME"],
        timeout=FILE_TIMEOUT,
        check=False,
    )
    if not result.ok:
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def parse_lvm_report(text: str, section: str) -> list[dict[str, str]]:
    """Pure: rows of an LVM `--reportformat json` report (`section` is "vg", "lv" or "pv")."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    rows: list[dict[str, str]] = []
    for report in data.get("report", []):
        for row in report.get(section, []):
            rows.append({str(k): str(v) for k, v in row.items()})
    return rows


def vg_info(runner: Runner, vg: str) -> dict[str, str] | None:
    """The VG's report row (vg_name, vg_tags, vg_size in MiB, pv_count, lv_count), or None if it does not exist."""
    result = runner.run(
        [
            "vgs",
            "--reportformat",
            "json",
            "--units",
            "m",
            "--nosuffix",
            "-o",
            "vg_name,vg_tags,vg_size,pv_count,lv_count",
            vg,
        ],
        timeout=LVM_TIMEOUT,
        check=False,
    )
    if not result.ok:
        return None
    rows = [r for r in parse_lvm_report(result.stdout, "vg") if r.get("vg_name") == vg]
    return rows[0] if rows else None


def vg_tags(info: Mapping[str, str]) -> set[str]:
    return {t for t in info.get("vg_tags", "").split(",") if t}


def lv_names(runner: Runner, vg: str) -> list[str]:
    result = runner.run(
        ["lvs", "--reportformat", "json", "-o", "lv_name,lv_tags", vg], timeout=LVM_TIMEOUT, check=False
    )
    if not result.ok:
        return []
    return [r["lv_name"] for r in parse_lvm_report(result.stdout, "lv") if r.get("lv_name")]


def lv_exists(runner: Runner, vg: str, lv: str) -> bool:
    return runner.run(["lvs", f"{vg}/{lv}"], timeout=LVM_TIMEOUT, check=False).ok


def ensure_lv(runner: Runner, vg: str, lv: str, size_mib: int, *, lab: str) -> str:
    """Create LV `vg/lv` (tagged with the lab) unless it exists; returns its device path /dev/VG/LV."""
    if not lv_exists(runner, vg, lv):
        runner.run(
            ["lvcreate", "--yes", "--name", lv, "--size", f"{size_mib}m", "--addtag", lab_tag(lab), vg],
            timeout=LVM_TIMEOUT,
        )
    return f"/dev/{vg}/{lv}"


def vg_pvs(runner: Runner, vg: str) -> list[str]:
    """The PVs (kernel device names, e.g. /dev/vdb) of VG `vg` on the node."""
    result = runner.run(["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"], timeout=LVM_TIMEOUT, check=False)
    if not result.ok:
        return []
    return [r["pv_name"] for r in parse_lvm_report(result.stdout, "pv") if r.get("vg_name") == vg]


def resolve_device(runner: Runner, path: str) -> str | None:
    """The block device a stable path names (`readlink -e`), or None when no such device is there."""
    result = runner.run(["readlink", "-e", path], timeout=FILE_TIMEOUT, check=False)
    device = result.stdout.strip()
    return device if result.ok and device.startswith("/dev/") else None


def remove_lv(runner: Runner, vg: str, lv: str) -> None:
    if lv_exists(runner, vg, lv):
        runner.run(["lvremove", "--yes", f"{vg}/{lv}"], timeout=LVM_TIMEOUT)


class LvmDriver(BaseDriver):
    """Loop-backed, lab-tagged LVM volume group on one node. Spec changes (vg, size) replace it."""

    kind = "lvm"

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        spec = LvmSpec.from_spec(ctx.lab.name, resource.name, resource.spec)
        runner = ctx.on_node_if_up(spec.node)
        if runner is None:
            return None
        info = vg_info(runner, spec.vg)
        if info is None:
            return None
        tags = vg_tags(info)
        facts: dict[str, Any] = {
            "vg": spec.vg,
            "tags": sorted(tags),
            "size_mib": info.get("vg_size"),
            "lv_count": info.get("lv_count"),
        }
        if spec.disk is not None:
            facts.update(disk=spec.disk, pvs=vg_pvs(runner, spec.vg))
            if spec.tag not in tags:
                return Observed(False, facts)
            device = resolve_device(runner, spec.disk)
            if device is None or device not in facts["pvs"]:
                return Observed(True, facts, (f"the VG's PVs {facts['pvs']} are not the disk {spec.disk} ({device})",))
            return Observed(True, facts)
        facts.update(loops=loops_of(runner, spec.file), file=spec.file)
        if spec.tag not in tags:
            return Observed(False, facts)
        drift: list[str] = []
        if not facts["loops"]:
            drift.append(f"{spec.file} is not attached to a loop device (the VG is not backed by the lab's file)")
        if node_has_systemd(runner) and not node_path_exists(runner, spec.unit_path):
            drift.append(f"reboot unit {spec.unit} missing")
        return Observed(True, facts, tuple(drift))

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        resource = change.resource
        spec = LvmSpec.from_spec(ctx.lab.name, resource.name, resource.spec)
        runner = ctx.on_node(spec.node)
        check_device_mapper(runner, resource.id)

        info = vg_info(runner, spec.vg)
        if info is not None and spec.tag not in vg_tags(info):
            raise PlanError(
                f"volume group {spec.vg} exists on {spec.node} without the lab's tag {spec.tag}",
                resource=resource.id,
                hint="pick another `vg` name in storage.lvm; stacklab never touches foreign volume groups",
            )

        if spec.disk is not None:
            return self._apply_on_disk(ctx, runner, spec, resource.id, exists=info is not None)
        ctx.progress(f"{resource.id}: backing file {spec.file} ({spec.size_mib} MiB, sparse)")
        runner.run(["mkdir", "-p", LVM_DIR], timeout=FILE_TIMEOUT)
        if not node_path_exists(runner, spec.file):
            runner.run(["truncate", "--size", f"{spec.size_mib}M", spec.file], timeout=FILE_TIMEOUT)

        loops = loops_of(runner, spec.file)
        if loops:
            loop = loops[0]
        else:
            loop = runner.run(["losetup", "--find", "--show", spec.file], timeout=FILE_TIMEOUT).stdout.strip()
            if not loop.startswith("/dev/"):
                raise StackLabError(f"losetup printed no device for {spec.file}: {loop!r}", resource=resource.id)

        if info is None:
            ctx.progress(f"{resource.id}: PV {loop}, VG {spec.vg}")
            if not runner.run(["pvs", loop], timeout=LVM_TIMEOUT, check=False).ok:
                runner.run(["pvcreate", "--yes", loop], timeout=LVM_TIMEOUT)
            runner.run(["vgcreate", "--yes", "--addtag", spec.tag, spec.vg, loop], timeout=LVM_TIMEOUT)

        unit: str | None = None
        if node_has_systemd(runner):
            unit = spec.unit
            if write_node_file(runner, spec.unit_path, render_loop_unit(spec)):
                systemctl(runner, "daemon-reload")
            # Enabled, not started: the loop is attached already; starting would attach a second one.
            systemctl(runner, "enable", spec.unit)
        else:
            LOG.warning(
                "%s: %s has no systemd; the loop device is not re-attached after a reboot", resource.id, spec.node
            )
        return {"vg": spec.vg, "loop": loop, "file": spec.file, "unit": unit, "node": spec.node}

    def _apply_on_disk(
        self, ctx: DriverContext, runner: Runner, spec: LvmSpec, resource_id: str, *, exists: bool
    ) -> Mapping[str, Any]:
        """The VG on the node's own disk: the disk is the lab's (its VM's data disk), the PV is the whole disk."""
        assert spec.disk is not None
        device = resolve_device(runner, spec.disk)
        if device is None:
            raise StackLabError(
                f"{spec.node} has no disk {spec.disk}",
                resource=resource_id,
                hint="storage.lvm.disk names one of the node's `disks` (a VM node's virtio disk, by its serial)",
            )
        if not exists:
            ctx.progress(f"{resource_id}: PV {spec.disk} ({device}), VG {spec.vg}")
            if not runner.run(["pvs", device], timeout=LVM_TIMEOUT, check=False).ok:
                runner.run(["pvcreate", "--yes", device], timeout=LVM_TIMEOUT)
            runner.run(["vgcreate", "--yes", "--addtag", spec.tag, spec.vg, device], timeout=LVM_TIMEOUT)
        return {"vg": spec.vg, "disk": spec.disk, "device": device, "node": spec.node}

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        found = recorded_spec(resource_id, recorded)
        if found is None:
            return
        raw, node = found
        spec = LvmSpec.from_spec(ctx.lab.name, node, raw)
        runner = ctx.node_for_delete(resource_id, node, "its VG goes")
        if runner is None:
            return
        info = vg_info(runner, spec.vg)
        loops = [] if spec.disk is not None else loops_of(runner, spec.file)
        if info is not None:
            if spec.tag not in vg_tags(info):
                raise StackLabError(
                    f"volume group {spec.vg} on {node} lacks the lab's tag {spec.tag}; not removing it",
                    resource=resource_id,
                    hint="it is not this lab's; remove it by hand if you are sure",
                )
            for lv in lv_names(runner, spec.vg):
                runner.run(["lvremove", "--yes", f"{spec.vg}/{lv}"], timeout=LVM_TIMEOUT)
            runner.run(["vgremove", "--yes", spec.vg], timeout=LVM_TIMEOUT)
        if spec.disk is not None:
            device = resolve_device(runner, spec.disk)
            if device is not None:  # the lab's own disk: its PV label goes with the VG
                runner.run(["pvremove", "--yes", device], timeout=LVM_TIMEOUT, check=False)
            return
        for loop in loops:
            runner.run(["pvremove", "--yes", loop], timeout=LVM_TIMEOUT, check=False)
            runner.run(["losetup", "--detach", loop], timeout=FILE_TIMEOUT)
        runner.run(["rm", "-f", spec.file], timeout=FILE_TIMEOUT)
        if node_path_exists(runner, spec.unit_path):
            systemctl(runner, "disable", spec.unit, check=False)
            runner.run(["rm", "-f", spec.unit_path], timeout=FILE_TIMEOUT)
            systemctl(runner, "daemon-reload", check=False)


@register("lvm")
def _factory() -> Driver:
    return LvmDriver()
