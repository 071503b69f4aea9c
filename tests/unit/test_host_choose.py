"""choose / choose_all: pure decisions from a HostReport built in the test."""

from __future__ import annotations

import dataclasses

import pytest

from stacklab.errors import PlanError
from stacklab.host import ROLES, Capability, HostReport, KvmStatus, choose, choose_all, implementations

YES = Capability(True, "present")


def no(what: str) -> Capability:
    return Capability(False, f"{what} not found")


def ci_report() -> HostReport:
    return HostReport(
        is_root=True,
        systemd_pid1=False,
        kvm=KvmStatus(True, False, "QEMU exited 1: failed to set MSR 0x10a to 0x69"),
        device_mapper=no("device-mapper"),
        configfs=no("configfs"),
        lio_target=no("LIO"),
        nfsd=no("nfsd"),
        nfs_client=no("nfs"),
        iscsi_initiator=no("iscsi"),
        rbd=no("rbd"),
        nbd=no("nbd"),
        loop=YES,
        overlayfs=YES,
        fuse=YES,
        cgroup="hybrid",
        cap_sys_resource=False,
        kernel_modules=False,
        mem_available_bytes=20 << 30,
        disk_path="/work",
        disk_free_bytes=80 << 30,
        cpu_count=2,
        tools={"podman": None, "qemu-system-x86_64": "/usr/bin/qemu-system-x86_64"},
    )


def full_report() -> HostReport:
    return dataclasses.replace(
        ci_report(),
        systemd_pid1=True,
        kvm=KvmStatus(True, True, "a test guest ran under kvm"),
        device_mapper=YES,
        configfs=YES,
        lio_target=YES,
        nfsd=YES,
        nfs_client=YES,
        iscsi_initiator=YES,
        rbd=YES,
        nbd=YES,
        cgroup="v2",
        cap_sys_resource=True,
        kernel_modules=True,
        tools={"podman": "/usr/bin/podman", "qemu-system-x86_64": "/usr/bin/qemu-system-x86_64"},
    )


def picked(report: HostReport) -> dict[str, str]:
    return {role: choice.implementation for role, choice in choose_all(report, {}).items()}


def test_ci_host_picks_user_space() -> None:
    assert picked(ci_report()) == {
        "node_kind": "container",
        "accel": "tcg",
        "iscsi_target": "tgt",
        "iscsi_initiator": "libiscsi",
        "nfs_server": "ganesha",
        "nfs_client": "libnfs",
        "ceph": "packages",
        "block_volumes": "file",
        "swift_devices": "tmpfs",
    }


def test_full_host_picks_kernel_implementations() -> None:
    assert picked(full_report()) == {
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


def test_choice_says_why_and_lists_the_rest() -> None:
    choice = choose(ci_report(), "iscsi_target")
    assert choice.role == "iscsi_target"
    assert choice.implementation == "tgt"
    assert choice.reason == "tgt is a user-space iSCSI target (tgtd); not lio: LIO needs configfs: configfs not found"
    assert choice.alternatives == ()
    assert choice.unavailable == (("lio", "LIO needs configfs: configfs not found"),)

    volumes = choose(ci_report(), "block_volumes")
    assert (volumes.implementation, volumes.alternatives) == ("file", ("rbd",))
    assert choose(full_report(), "block_volumes").alternatives == ("file", "rbd")
    assert choose(full_report(), "iscsi_target").to_json() == {
        "role": "iscsi_target",
        "implementation": "lio",
        "reason": "kernel LIO target (present; present)",
        "alternatives": ["tgt"],
        "unavailable": {},
    }


def test_pin_lio_on_ci_host_names_the_missing_capability_and_the_alternative() -> None:
    with pytest.raises(PlanError) as caught:
        choose(ci_report(), "iscsi_target", pinned="lio")
    assert str(caught.value) == (
        "iscsi_target: lio cannot run on this host: LIO needs configfs: configfs not found "
        "(hint: pin tgt instead, or leave iscsi_target unpinned to let stacklab choose)"
    )


def test_lio_needs_target_core_as_well_as_configfs() -> None:
    report = dataclasses.replace(full_report(), lio_target=no("/sys/kernel/config/target"))
    choice = choose(report, "iscsi_target")
    assert choice.implementation == "tgt"
    assert "target_core_mod" in choice.reason


@pytest.mark.parametrize(
    ("role", "pin", "missing"),
    [
        ("nfs_server", "knfsd", "knfsd needs nfsd"),
        ("nfs_client", "kernel", "nfs filesystem"),
        ("iscsi_initiator", "open-iscsi", "kernel iSCSI initiator"),
        ("block_volumes", "lvm", "device-mapper"),
        ("accel", "kvm", "MSR"),
        ("ceph", "cephadm", "systemd as PID 1"),
    ],
)
def test_pins_the_ci_host_cannot_run(role: str, pin: str, missing: str) -> None:
    with pytest.raises(PlanError, match=missing):
        choose(ci_report(), role, pinned=pin)


def test_user_space_pins_run_on_a_full_host() -> None:
    report = full_report()
    for role, pin in {"iscsi_target": "tgt", "nfs_server": "ganesha", "ceph": "packages", "accel": "tcg"}.items():
        choice = choose(report, role, pinned=pin)
        assert choice.implementation == pin
        assert choice.reason.startswith("pinned by the lab; ")


def test_vm_can_be_pinned_without_kvm_but_is_never_picked() -> None:
    choice = choose(ci_report(), "node_kind", pinned="vm")
    assert choice.implementation == "vm"
    assert "TCG" in choice.reason
    assert choose(ci_report(), "node_kind").implementation == "container"


def test_unproven_kvm_is_not_picked_but_may_be_pinned() -> None:
    report = dataclasses.replace(
        full_report(), kvm=KvmStatus(True, None, "qemu-system-x86_64 not installed; cannot prove KVM works")
    )
    assert choose(report, "accel").implementation == "tcg"
    assert choose(report, "node_kind").implementation == "container"
    assert choose(report, "accel", pinned="kvm").implementation == "kvm"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"systemd_pid1": False}, "systemd as PID 1"),
        ({"tools": {"podman": None}}, "podman on PATH"),
        ({"cgroup": "hybrid"}, "hybrid"),
        ({"cap_sys_resource": False}, "CAP_SYS_RESOURCE"),
    ],
)
def test_cephadm_requirements(change: dict[str, object], why: str) -> None:
    report = dataclasses.replace(full_report(), **change)  # type: ignore[arg-type]
    choice = choose(report, "ceph")
    assert choice.implementation == "packages"
    assert why in choice.reason


def test_cephadm_accepts_cgroup_v1_only() -> None:
    assert choose(dataclasses.replace(full_report(), cgroup="v1"), "ceph").implementation == "cephadm"


def test_unknown_role_and_implementation() -> None:
    with pytest.raises(PlanError, match="unknown role 'dns'"):
        choose(ci_report(), "dns")
    with pytest.raises(PlanError, match=r"unknown implementation 'iet'.*lio, tgt"):
        choose(ci_report(), "iscsi_target", pinned="iet")


def test_choose_all_reports_every_bad_pin_at_once() -> None:
    with pytest.raises(PlanError) as caught:
        choose_all(ci_report(), {"iscsi_target": "lio", "nfs_server": "knfsd", "dns": "bind", "ceph": "packages"})
    message = str(caught.value)
    assert "unknown role(s) dns" in message
    assert "iscsi_target: lio cannot run" in message
    assert "nfs_server: knfsd cannot run" in message
    assert "ceph:" not in message  # the pin that can run is not an error


def test_choose_all_honours_pins() -> None:
    choices = choose_all(full_report(), {"iscsi_target": "tgt", "node_kind": "container"})
    assert choices["iscsi_target"].implementation == "tgt"
    assert choices["node_kind"].implementation == "container"
    assert choices["accel"].implementation == "kvm"
    assert set(choices) == set(ROLES)


def test_every_role_ends_with_an_implementation_that_always_runs() -> None:
    for role in ROLES:
        assert implementations(role)
        choose(ci_report(), role)  # does not raise
