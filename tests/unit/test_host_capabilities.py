"""probe_host and the KVM probe against fake /proc, /sys and /dev trees and a FakeRunner."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

import pytest

from stacklab.errors import PlanError
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult, CommandTimeout
from stacklab.host import BOOT_SECTOR, HostReport, choose, choose_all, probe_host, probe_kvm
from stacklab.host.kvm_probe import QEMU, KvmStatus, kvm_for_libvirt, qemu_user_problem


def qemu_at(root: Path) -> tuple[str]:
    """The argv prefix of the KVM probe when QEMU is found in the fake tree."""
    return (str(root / "usr/bin/qemu-system-x86_64"),)


CI_FILESYSTEMS = """nodev\tsysfs
nodev\ttmpfs
nodev\tproc
nodev\tcgroup
nodev\tcgroup2
nodev\tdevpts
\text4
\tsquashfs
\tfuseblk
nodev\tfuse
nodev\tfusectl
nodev\toverlay
\txfs
\tbtrfs
"""
CI_MOUNTS = """tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
CI_MISC = " 234 btrfs-control\n200 tun\n237 loop-control\n229 fuse\n232 kvm\n"
CI_DEVICES = "Character devices:\n  1 mem\n 10 misc\n\nBlock devices:\n  7 loop\n253 zram\n254 virtblk\n"
# root with every capability but CAP_SYS_RESOURCE, on CPUs 0-1
CI_STATUS = "Name:\tpython\nUid:\t0\t0\t0\t0\nCapEff:\t000001fffeffffff\nCpus_allowed_list:\t0-1\n"

FULL_FILESYSTEMS = CI_FILESYSTEMS + "nodev\tconfigfs\nnodev\tnfsd\nnodev\tnfs\nnodev\tnfs4\n"
FULL_MOUNTS = """cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
configfs /sys/kernel/config configfs rw,relatime 0 0
nfsd /proc/fs/nfsd nfsd rw,relatime 0 0
"""
FULL_MISC = CI_MISC + "236 device-mapper\n"
FULL_STATUS = "Name:\tpython\nUid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\nCpus_allowed_list:\t0-3,6,8-9\n"

CI_TOOLS = ("ip", "lxc-start", "lxc-attach", "lxc-info", "qemu-system-x86_64", "qemu-img", "ssh", "mkfs.ext4")
FULL_TOOLS = (*CI_TOOLS, "podman", "cephadm", "targetcli", "exportfs", "virsh", "libvirtd", "xorriso")


def write(root: Path, path: str, text: str = "") -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def kvm_device(root: Path, *, mode: int = 0o660, group: str = "kvm") -> None:
    """/dev/kvm as Debian's udev rule leaves it (group kvm, 0660), libvirt-qemu a member of that group."""
    write(root, "/dev/kvm")
    gid = (root / "dev/kvm").stat().st_gid
    (root / "dev/kvm").chmod(mode)
    write(root, "/etc/group", f"{group}:x:{gid}:libvirt-qemu\nlibvirt-qemu:x:64055:\n")
    passwd = "root:x:0:0:root:/root:/bin/sh\nlibvirt-qemu:x:64055:64055::/var/lib/libvirt:/bin/false\n"
    write(root, "/etc/passwd", passwd)


def mkdirs(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)


def install_tools(root: Path, names: Iterable[str], directory: str = "/usr/bin") -> None:
    for name in names:
        write(root, f"{directory}/{name}", "#!/bin/sh\n")
        tool = root / directory.lstrip("/") / name
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


def ci_host_tree(root: Path) -> Path:
    """The CI host type: static kernel, no dm/configfs/nfsd, hybrid cgroups, PID 1 not systemd."""
    write(root, "/proc/1/comm", "process_api\n")
    write(root, "/proc/filesystems", CI_FILESYSTEMS)
    write(root, "/proc/mounts", CI_MOUNTS)
    write(root, "/proc/misc", CI_MISC)
    write(root, "/proc/devices", CI_DEVICES)
    write(root, "/proc/self/status", CI_STATUS)
    write(root, "/proc/meminfo", "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n")
    write(root, "/proc/sys/kernel/osrelease", "6.1.0\n")
    for dev in ("/dev/kvm", "/dev/fuse", "/dev/loop-control"):
        write(root, dev)
    kvm_device(root)
    mkdirs(root, "/sys/block/loop0", "/sys/block/vda", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory")
    install_tools(root, CI_TOOLS)
    return root


def full_host_tree(root: Path, *, modules_loaded: bool = True) -> Path:
    """A workstation: systemd, cgroup v2, every storage feature, loadable modules."""
    write(root, "/proc/1/comm", "systemd\n")
    mkdirs(root, "/run/systemd/system")
    write(root, "/proc/misc", FULL_MISC)
    write(root, "/proc/devices", CI_DEVICES + "252 device-mapper\n")
    write(root, "/proc/self/status", FULL_STATUS)
    write(root, "/proc/meminfo", "MemAvailable:   8000000 kB\n")
    write(root, "/proc/sys/kernel/osrelease", "6.8.0-45-generic\n")
    write(root, "/proc/modules", "overlay 151552 0 - Live 0x0\n")
    for dev in ("/dev/kvm", "/dev/fuse", "/dev/loop-control", "/dev/mapper/control", "/dev/nbd0"):
        write(root, dev)
    kvm_device(root)
    mkdirs(root, "/sys/fs/cgroup")
    write(root, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    if modules_loaded:
        write(root, "/proc/filesystems", FULL_FILESYSTEMS)
        write(root, "/proc/mounts", FULL_MOUNTS)
        mkdirs(root, "/sys/kernel/config/target", "/sys/class/iscsi_transport/tcp", "/sys/bus/rbd")
    else:
        # nothing loaded yet: nfsd, rbd, iscsi_tcp and target_core_mod come from modules.dep on first use
        write(root, "/proc/filesystems", CI_FILESYSTEMS + "nodev\tconfigfs\n")
        write(root, "/proc/mounts", FULL_MOUNTS.splitlines()[0] + "\n")
        release = "/lib/modules/6.8.0-45-generic"
        write(
            root,
            f"{release}/modules.dep",
            "kernel/fs/nfsd/nfsd.ko.zst: kernel/fs/nfs_common/grace.ko.zst\n"
            "kernel/fs/nfs/nfsv4.ko.zst: kernel/fs/nfs/nfs.ko.zst\n"
            "kernel/fs/nfs/nfs.ko.zst:\n"
            "kernel/drivers/block/rbd.ko.zst: kernel/net/ceph/libceph.ko.zst\n"
            "kernel/drivers/scsi/iscsi_tcp.ko.zst: kernel/drivers/scsi/libiscsi_tcp.ko.zst\n"
            "kernel/drivers/target/target_core_mod.ko.zst:\n",
        )
        write(root, f"{release}/modules.builtin", "kernel/fs/configfs/configfs.ko\n")
    install_tools(root, FULL_TOOLS)
    install_tools(root, ("tgtadm",), directory="/usr/sbin")
    return root


def qemu_ok(root: Path) -> FakeRunner:
    return FakeRunner().expect(qemu_at(root), rc=3, times=1)


def probe(root: Path, runner: FakeRunner, tmp_path: Path) -> HostReport:
    return probe_host(runner, root=root, disk_path=tmp_path, path="/usr/bin:/usr/sbin")


# --- probe_host on the two host types -----------------------------------------------------------------------


def test_ci_host_type_reads_as_user_space_only(tmp_path: Path) -> None:
    root = ci_host_tree(tmp_path / "root")
    runner = FakeRunner().expect(
        qemu_at(root),
        rc=-6,
        stderr="qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n"
        "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed.\n",
    )
    report = probe(root, runner, tmp_path)

    assert report.is_root
    assert not report.systemd_pid1
    assert report.cgroup == "hybrid"
    assert report.cap_sys_resource is False
    assert not report.kernel_modules
    for name in ("device_mapper", "configfs", "lio_target", "nfsd", "nfs_client", "iscsi_initiator", "rbd", "nbd"):
        assert not getattr(report, name).available, name
    assert report.loop.available and report.overlayfs.available and report.fuse.available
    assert report.kvm.device_present
    assert report.kvm.usable_for_guests is False
    assert "failed to set MSR 0x10a to 0x69" in report.kvm.reason
    assert report.mem_available_bytes == 20000000 * 1024
    assert report.cpu_count == 2
    assert report.disk_free_bytes is not None and report.disk_free_bytes > 0
    assert report.tools["ip"] == str(root / "usr/bin/ip")
    assert report.tools["tgtadm"] is None
    assert report.iso_tool is None
    assert "podman" in report.missing_tools
    # the qemu probe ran once, with KVM and the host CPU
    [argv] = runner.calls
    assert argv[:5] == (*qemu_at(root), "-accel", "kvm", "-cpu", "host")

    choices = choose_all(report, {})
    picked = {role: choice.implementation for role, choice in choices.items()}
    assert picked == {
        "node_kind": "container",
        "accel": "tcg",
        "iscsi_target": "tgt",
        "iscsi_initiator": "libiscsi",
        "nfs_server": "ganesha",
        "nfs_client": "libnfs",
        "ceph": "packages",
        "block_volumes": "file",
        "swift_devices": "directory",  # a 6.1 kernel, judged by its version (the tmpfs probe runs on / only)
    }
    assert "6.1.0 < 6.6" in choices["swift_devices"].reason
    assert "configfs" in choices["iscsi_target"].reason
    assert "systemd" in choices["ceph"].reason and "hybrid" in choices["ceph"].reason


def test_full_host_reads_as_full_kernel(tmp_path: Path) -> None:
    root = full_host_tree(tmp_path / "root")
    report = probe(root, qemu_ok(root), tmp_path)

    assert report.systemd_pid1
    assert report.cgroup == "v2"
    assert report.cap_sys_resource is True
    assert report.kvm.usable_for_guests is True
    for name in ("device_mapper", "configfs", "lio_target", "nfsd", "nfs_client", "iscsi_initiator", "rbd", "nbd"):
        assert getattr(report, name).available, name
    assert report.cpu_count == 7
    assert report.tools["tgtadm"] == str(root / "usr/sbin/tgtadm")
    assert report.iso_tool == str(root / "usr/bin/xorriso")

    picked = {role: choice.implementation for role, choice in choose_all(report, {}).items()}
    assert picked == {
        "node_kind": "vm",
        "accel": "kvm",
        "iscsi_target": "lio",
        "iscsi_initiator": "open-iscsi",
        "nfs_server": "knfsd",
        "nfs_client": "kernel",
        "ceph": "cephadm",
        "block_volumes": "lvm",
        "swift_devices": "tmpfs",
    }


def test_loadable_modules_count_as_available(tmp_path: Path) -> None:
    root = full_host_tree(tmp_path / "root", modules_loaded=False)
    report = probe(root, qemu_ok(root), tmp_path)

    assert report.kernel_modules
    assert report.nfsd.detail == "loadable module nfsd"
    assert report.rbd.detail == "loadable module rbd"
    assert report.iscsi_initiator.detail == "loadable module iscsi_tcp"
    assert report.lio_target.detail == "loadable module target_core_mod"
    assert report.nfs_client.available
    assert choose(report, "iscsi_target").implementation == "lio"


def test_modules_are_not_loadable_without_root(tmp_path: Path) -> None:
    root = full_host_tree(tmp_path / "root", modules_loaded=False)
    write(root, "/proc/self/status", FULL_STATUS.replace("Uid:\t0\t0\t0\t0", "Uid:\t1000\t1000\t1000\t1000"))
    report = probe(root, qemu_ok(root), tmp_path)

    assert not report.is_root
    assert not report.nfsd.available
    assert "kernel modules cannot be loaded" in report.nfsd.detail


def test_pinning_lio_on_the_ci_host_is_a_plan_error(tmp_path: Path) -> None:
    root = ci_host_tree(tmp_path / "root")
    report = probe(root, FakeRunner().expect(qemu_at(root), rc=1), tmp_path)

    with pytest.raises(PlanError) as caught:
        choose(report, "iscsi_target", pinned="lio")
    message = str(caught.value)
    assert message.startswith("iscsi_target: lio cannot run on this host: LIO needs configfs")
    assert "configfs in /proc/filesystems" in message
    assert "hint: pin tgt instead" in message


@pytest.mark.parametrize(
    ("mounts", "tree", "expected"),
    [
        (CI_MOUNTS, [], "hybrid"),
        (FULL_MOUNTS, [], "v2"),
        ("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n", [], "v1"),
        ("", ["/sys/fs/cgroup/cgroup.controllers"], "v2"),
        ("", ["/sys/fs/cgroup/unified/cgroup.controllers", "/sys/fs/cgroup/memory/tasks"], "hybrid"),
        ("", ["/sys/fs/cgroup/memory/tasks"], "v1"),
        ("", [], "none"),
    ],
)
def test_cgroup_layout(tmp_path: Path, mounts: str, tree: list[str], expected: str) -> None:
    root = tmp_path / "root"
    if mounts:
        write(root, "/proc/mounts", mounts)
    for path in tree:
        write(root, path)
    report = probe_host(FakeRunner(), root=root, disk_path=tmp_path, path="", check_kvm=False)
    assert report.cgroup == expected


def test_empty_tree_reports_nothing_and_runs_nothing(tmp_path: Path) -> None:
    runner = FakeRunner()
    report = probe_host(runner, root=tmp_path, disk_path=tmp_path / "not" / "yet", path="")

    assert runner.calls == []
    assert report.kvm.device_present is False
    assert report.kvm.usable_for_guests is False
    assert report.kvm.reason == "/dev/kvm is absent"
    assert report.mem_available_bytes is None
    assert report.disk_free_bytes is not None  # measured on the nearest existing parent
    assert set(report.tools) >= {"ip", "qemu-system-x86_64", "podman", "genisoimage", "xorriso", "mkfs.ext4"}
    assert all(found is None for found in report.tools.values())


def test_to_json_is_plain_data(tmp_path: Path) -> None:
    import json

    root = ci_host_tree(tmp_path / "root")
    report = probe(root, FakeRunner().expect(qemu_at(root), rc=3), tmp_path)
    data = report.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["kvm"] == {"device_present": True, "usable_for_guests": True, "reason": report.kvm.reason}
    assert data["configfs"] == {"available": False, "detail": report.configfs.detail}
    assert data["cgroup"] == "hybrid"


# --- the KVM probe with a FakeRunner ------------------------------------------------------------------------


def test_boot_sector_is_a_bootable_sector_writing_the_exit_port() -> None:
    assert len(BOOT_SECTOR) == 512
    assert BOOT_SECTOR[-2:] == b"\x55\xaa"
    assert BOOT_SECTOR[:4] == bytes([0xB0, 0x01, 0xE6, 0xF4])  # mov al,1; out 0xf4,al


def test_kvm_probe_rc3_means_guests_run() -> None:
    runner = FakeRunner().expect([QEMU, "-accel", "kvm"], rc=3)
    status = probe_kvm(runner, device_present=True, qemu=QEMU)

    assert status.usable_for_guests is True
    assert status.device_present
    assert "ran under kvm" in status.reason
    [argv] = runner.calls
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in argv
    drive = next(arg for arg in argv if arg.startswith("format=raw,file="))
    assert drive.endswith("boot.img,if=ide")
    assert not Path(drive.split("file=")[1].split(",")[0]).exists()  # the temp image is cleaned up


def test_kvm_probe_msr_error_is_quoted() -> None:
    stderr = (
        "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]\n"
        "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n"
    )
    runner = FakeRunner().expect([QEMU], rc=1, stderr=stderr)
    status = probe_kvm(runner, device_present=True, qemu=QEMU)

    assert status.usable_for_guests is False
    assert status.reason == (
        "a test guest under kvm did not run; QEMU exited 1 (expected 3): "
        "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69"
    )


def test_kvm_probe_timeout_means_guests_hang() -> None:
    def hang(argv: tuple[str, ...]) -> CommandResult:
        raise CommandTimeout(argv, 10.0)

    runner = FakeRunner().expect([QEMU], responder=hang)
    status = probe_kvm(runner, device_present=True, qemu=QEMU, timeout=10.0)

    assert status.usable_for_guests is False
    assert status.reason == "a test guest under kvm did not finish within 10s (hangs)"


def test_kvm_probe_other_exit_without_output() -> None:
    status = probe_kvm(FakeRunner().expect([QEMU], rc=0), device_present=True, qemu=QEMU)
    assert status.usable_for_guests is False
    assert status.reason == "a test guest under kvm did not run; QEMU exited 0 (expected 3)"


def test_kvm_probe_without_qemu_cannot_tell() -> None:
    runner = FakeRunner()
    status = probe_kvm(runner, device_present=True, qemu=None)

    assert status.usable_for_guests is None
    assert status.reason == "qemu-system-x86_64 not installed; cannot prove KVM works"
    assert runner.calls == []


def test_kvm_probe_without_device() -> None:
    status = probe_kvm(FakeRunner(), device_present=False, qemu=QEMU)
    assert (status.device_present, status.usable_for_guests, status.reason) == (False, False, "/dev/kvm is absent")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the device another group needs root")
def test_kvm_that_libvirts_qemu_user_cannot_open_is_not_usable(tmp_path: Path) -> None:
    root = full_host_tree(tmp_path / "root")
    write(root, "/etc/group", "rdma:x:4242:\nkvm:x:993:libvirt-qemu\n")
    os.chown(root / "dev/kvm", -1, 4242)  # the device's group is not one libvirt-qemu is in (seen on a CI host)

    problem = qemu_user_problem(root)
    assert problem is not None and "libvirt-qemu" in problem and "rdma" in problem and "usermod" in problem
    status = kvm_for_libvirt(KvmStatus(True, True, "a test guest ran under kvm"), root)
    assert status.usable_for_guests is False and "cannot be opened by libvirt-qemu" in status.reason
    assert choose(probe(root, qemu_ok(root), tmp_path), "node_kind").implementation == "container"


def test_kvm_user_from_qemu_conf_and_before_libvirt_is_installed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    kvm_device(root)
    assert qemu_user_problem(root) is None  # libvirt-qemu in the device's group
    write(root, "/etc/libvirt/qemu.conf", 'user = "root"\n')
    (root / "dev/kvm").chmod(0o600)
    assert qemu_user_problem(root) is None  # QEMU runs as root
    (root / "etc/libvirt/qemu.conf").unlink()
    assert qemu_user_problem(root) is not None
    write(root, "/etc/passwd", "root:x:0:0::/root:/bin/sh\n")  # libvirt not installed: Debian puts its user in kvm
    (root / "dev/kvm").chmod(0o660)
    assert qemu_user_problem(root) is None
