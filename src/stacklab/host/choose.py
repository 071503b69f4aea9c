"""Pick an implementation for each role from the host report, or check the lab's pin against it.

Each role lists its implementations best first (the full-kernel one, then the user-space one). An
implementation has a verdict on a host: can it run here at all (a pin is accepted), and should it be picked
when nothing is pinned. For example a VM node can run under TCG anywhere, but `node_kind` only picks `vm` when
KVM was seen to run a guest. Pure functions of the report: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from stacklab.errors import PlanError
from stacklab.host.capabilities import HostReport
from stacklab.host.features import Capability

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    role: str
    implementation: str
    reason: str
    alternatives: tuple[str, ...]  # other implementations of the role this host can run, best first
    unavailable: tuple[tuple[str, str], ...] = ()  # (implementation, why it cannot run here)

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "implementation": self.implementation,
            "reason": self.reason,
            "alternatives": list(self.alternatives),
            "unavailable": {name: why for name, why in self.unavailable},
        }


@dataclass(frozen=True)
class _Verdict:
    runs: bool  # the host can run it (a pin is accepted)
    preferred: bool  # picked automatically when it is the first preferred option
    reason: str  # why it runs / is preferred, or the missing capability


def _ok(reason: str) -> _Verdict:
    return _Verdict(True, True, reason)


def _missing(reason: str) -> _Verdict:
    return _Verdict(False, False, reason)


Check = Callable[[HostReport], _Verdict]


def _kernel(capability: Callable[[HostReport], Capability], runs: str, needs: str) -> Check:
    """A kernel implementation: it runs ("RUNS (detail)") when the host report found its kernel support, else it is
    missing ("NEEDS: detail"), the probe's detail saying what was or was not seen."""

    def check(r: HostReport) -> _Verdict:
        cap = capability(r)
        return _ok(f"{runs} ({cap.detail})") if cap.available else _missing(f"{needs}: {cap.detail}")

    return check


def _always(reason: str) -> Check:
    """A user-space implementation (or one the kernel always has): it runs on any host, for `reason`."""
    return lambda r: _ok(reason)


# --- node_kind / accel -------------------------------------------------------------------------------------


def _kvm(r: HostReport) -> _Verdict:
    if r.kvm.usable_for_guests:
        return _ok(f"KVM runs guests: {r.kvm.reason}")
    if r.kvm.usable_for_guests is None and r.kvm.device_present:
        # not proven either way: a pin is accepted (the user may know better), never picked by itself
        return _Verdict(True, False, f"KVM not proven to run guests ({r.kvm.reason})")
    return _missing(f"KVM cannot run guests here ({r.kvm.reason})")


def _vm(r: HostReport) -> _Verdict:
    kvm = _kvm(r)
    if kvm.preferred:
        return kvm
    return _Verdict(True, False, f"VMs would run under TCG (~15x slower): {kvm.reason}")


_container = _always("system containers share the host kernel and start in about a second")
_tcg = _always("QEMU TCG emulation runs anywhere")


# --- storage -----------------------------------------------------------------------------------------------


def _lio(r: HostReport) -> _Verdict:
    if not r.configfs.available:
        return _missing(f"LIO needs configfs: {r.configfs.detail}")
    if not r.lio_target.available:
        return _missing(f"LIO needs target_core_mod: {r.lio_target.detail}")
    return _ok(f"kernel LIO target ({r.configfs.detail}; {r.lio_target.detail})")


_tgt = _always("tgt is a user-space iSCSI target (tgtd)")
_open_iscsi = _kernel(
    lambda r: r.iscsi_initiator, "kernel iSCSI initiator", "open-iscsi needs the kernel iSCSI initiator"
)
_libiscsi = _always("libiscsi is a user-space initiator (QEMU iscsi://)")
_knfsd = _kernel(lambda r: r.nfsd, "kernel NFS server", "knfsd needs nfsd")
_ganesha = _always("nfs-ganesha is a user-space NFS server")
_kernel_nfs = _kernel(lambda r: r.nfs_client, "kernel NFS client", "kernel NFS mounts need the nfs filesystem")
_libnfs = _always("libnfs is a user-space NFS client (QEMU nfs://)")


def _cephadm(r: HostReport) -> _Verdict:
    missing = []
    if not r.systemd_pid1:
        missing.append("systemd as PID 1 (cephadm deploys every daemon as a systemd unit)")
    if not r.has_tool("podman"):
        missing.append("podman on PATH")
    if r.cgroup == "hybrid":
        missing.append("a pure cgroup v1 or v2 layout (podman/crun refuse hybrid cgroups)")
    elif r.cgroup == "none":
        missing.append("cgroups (none mounted)")
    if r.cap_sys_resource is False:
        missing.append("CAP_SYS_RESOURCE (crun cannot set podman's rlimits)")
    if missing:
        return _missing("cephadm needs " + "; ".join(missing))
    return _ok(f"systemd is PID 1, podman is installed, cgroup {r.cgroup}")


_ceph_packages = _always("mon/mgr/osd daemons from distro packages, started by stacklab")
_lvm = _kernel(lambda r: r.device_mapper, "LVM on a loop-backed VG", "LVM needs device-mapper")
_file = _always("file-backed volumes need no kernel support")


def _rbd(r: HostReport) -> _Verdict:
    # user-space librbd; never picked by itself because it needs a Ceph cluster in the lab
    return _Verdict(True, False, "Ceph RBD through librbd (needs a Ceph cluster in the lab)")


# --- swift devices -----------------------------------------------------------------------------------------


def _tmpfs_devices(r: HostReport) -> _Verdict:
    cap = r.tmpfs_user_xattrs
    if cap is None:  # a report built without the probe (tests): the devices stay as they were before the probe
        return _ok("each device a size-capped tmpfs mount (user xattrs on tmpfs not probed)")
    if cap.available:
        return _ok(f"each device a size-capped tmpfs mount, mount_check on: {cap.detail}")
    return _missing(f"Swift keeps object metadata in user xattrs: {cap.detail}")


_directory_devices = _always(
    "plain directories on the node's root file system, mount_check off (no device to unmount or fill)"
)


ROLES: dict[str, tuple[tuple[str, Check], ...]] = {
    "node_kind": (("vm", _vm), ("container", _container)),
    "accel": (("kvm", _kvm), ("tcg", _tcg)),
    "iscsi_target": (("lio", _lio), ("tgt", _tgt)),
    "iscsi_initiator": (("open-iscsi", _open_iscsi), ("libiscsi", _libiscsi)),
    "nfs_server": (("knfsd", _knfsd), ("ganesha", _ganesha)),
    "nfs_client": (("kernel", _kernel_nfs), ("libnfs", _libnfs)),
    "ceph": (("cephadm", _cephadm), ("packages", _ceph_packages)),
    "block_volumes": (("lvm", _lvm), ("file", _file), ("rbd", _rbd)),
    "swift_devices": (("tmpfs", _tmpfs_devices), ("directory", _directory_devices)),
}


def implementations(role: str) -> tuple[str, ...]:
    return tuple(name for name, _ in _options(role))


def _options(role: str) -> tuple[tuple[str, Check], ...]:
    try:
        return ROLES[role]
    except KeyError:
        raise PlanError(f"unknown role {role!r}", hint=f"roles are: {', '.join(ROLES)}") from None


def choose(report: HostReport, role: str, pinned: str | None = None) -> Choice:
    """The implementation of `role` to use on this host: the pinned one if it can run, else the best one."""
    options = _options(role)
    verdicts = {name: check(report) for name, check in options}
    runnable = [name for name, _ in options if verdicts[name].runs]
    unavailable = tuple((name, verdicts[name].reason) for name, _ in options if not verdicts[name].runs)

    if pinned is not None:
        if pinned not in verdicts:
            raise PlanError(
                f"{role}: unknown implementation {pinned!r}",
                hint=f"{role} is one of: {', '.join(verdicts)}",
            )
        verdict = verdicts[pinned]
        if not verdict.runs:
            others = [name for name in runnable if name != pinned]
            hint = (
                f"pin {' or '.join(others)} instead, or leave {role} unpinned to let stacklab choose"
                if others
                else f"no implementation of {role} can run on this host"
            )
            raise PlanError(f"{role}: {pinned} cannot run on this host: {verdict.reason}", hint=hint)
        chosen, reason = pinned, f"pinned by the lab; {verdict.reason}"
    else:
        preferred = [name for name, _ in options if verdicts[name].preferred]
        if not preferred:  # every role ends with an implementation that always runs
            raise PlanError(f"{role}: no implementation can run on this host", hint="run `stacklab doctor`")
        chosen = preferred[0]
        reason = verdicts[chosen].reason
        best = options[0][0]
        if chosen != best:  # say why the full-kernel implementation was passed over
            reason = f"{reason}; not {best}: {verdicts[best].reason}"

    LOG.debug("%s -> %s: %s", role, chosen, reason)
    return Choice(
        role=role,
        implementation=chosen,
        reason=reason,
        alternatives=tuple(name for name in runnable if name != chosen),
        unavailable=unavailable,
    )


def choose_all(report: HostReport, pins: Mapping[str, str] | None = None) -> dict[str, Choice]:
    """A choice for every role; every pin that cannot be honoured is reported in one PlanError."""
    pins = dict(pins or {})
    errors: list[str] = []
    unknown = sorted(set(pins) - set(ROLES))
    if unknown:
        errors.append(f"unknown role(s) {', '.join(unknown)} (roles are: {', '.join(ROLES)})")
    choices: dict[str, Choice] = {}
    for role in ROLES:
        try:
            choices[role] = choose(report, role, pins.get(role))
        except PlanError as exc:
            errors.append(str(exc))
    if errors:
        raise PlanError("the host cannot run this lab as pinned:\n  " + "\n  ".join(errors))
    return choices
