"""What this host can run: kernel features, init, cgroups, resources and tools, read without changing anything.

`probe_host` reads /proc, /sys and /dev under `root` (a fake tree in unit tests) and uses the runner only for
the two things a file cannot tell: whether KVM really runs a guest, and whether tmpfs holds user xattrs (Swift's
devices; host/xattrs.py). A kernel feature counts as available when
it is present now or when it can be loaded as a module (modules enabled, we are root, and modules.dep or
modules.builtin names it), because on a workstation nfsd, rbd or target_core_mod are often loaded on first use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stacklab.exec.runner import Runner
from stacklab.host.features import Capability, KernelFacts, device_features, storage_features
from stacklab.host.kvm_probe import DEFAULT_TIMEOUT, QEMU, KvmStatus, kvm_for_libvirt, probe_kvm
from stacklab.host.procfs import (
    HostFiles,
    Modules,
    Mount,
    filesystems_of,
    misc_devices,
    mounts_of,
    proc_devices,
    status_fields,
)
from stacklab.host.xattrs import by_kernel_version, probe_tmpfs_user_xattrs

LOG = logging.getLogger(__name__)

CgroupLayout = Literal["v1", "v2", "hybrid", "none"]

# Host tools stacklab may call; `None` in the report means not found on PATH.
TOOLS: tuple[str, ...] = (
    "ip",
    "lxc-start",
    "lxc-attach",
    "lxc-info",
    "mmdebstrap",
    QEMU,
    "qemu-img",
    "virsh",
    "libvirtd",
    "ssh",
    "ssh-keygen",
    "tgtadm",
    "ganesha.nfsd",
    "ceph-mon",
    "targetcli",
    "exportfs",
    "cephadm",
    "podman",
    "genisoimage",
    "xorriso",
    "mkfs.ext4",
)
# sbin directories are searched too: tgtadm, exportfs and libvirtd live there and a user's PATH may lack them.
_EXTRA_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

CAP_SYS_RESOURCE = 24


@dataclass(frozen=True)
class HostReport:
    is_root: bool
    systemd_pid1: bool
    kvm: KvmStatus
    device_mapper: Capability
    configfs: Capability
    lio_target: Capability  # configfs plus target_core_mod (/sys/kernel/config/target)
    nfsd: Capability
    nfs_client: Capability
    iscsi_initiator: Capability
    rbd: Capability
    nbd: Capability
    loop: Capability
    overlayfs: Capability
    fuse: Capability
    cgroup: CgroupLayout
    cap_sys_resource: bool | None  # None: unknown (no /proc/self/status)
    kernel_modules: bool  # modules can be loaded (CONFIG_MODULES and root)
    mem_available_bytes: int | None
    disk_path: str
    disk_free_bytes: int | None
    cpu_count: int
    tools: dict[str, str | None] = field(default_factory=dict)
    # user xattrs on a fresh tmpfs (Swift's devices); None: not probed
    tmpfs_user_xattrs: Capability | None = None

    def has_tool(self, name: str) -> bool:
        return self.tools.get(name) is not None

    @property
    def iso_tool(self) -> str | None:
        """The tool that builds NoCloud seed ISOs, genisoimage preferred."""
        return self.tools.get("genisoimage") or self.tools.get("xorriso")

    @property
    def missing_tools(self) -> tuple[str, ...]:
        return tuple(name for name, found in self.tools.items() if found is None)

    def to_json(self) -> dict[str, object]:
        caps = (
            "device_mapper",
            "configfs",
            "lio_target",
            "nfsd",
            "nfs_client",
            "iscsi_initiator",
            "rbd",
            "nbd",
            "loop",
            "overlayfs",
            "fuse",
        )
        out: dict[str, object] = {
            "is_root": self.is_root,
            "systemd_pid1": self.systemd_pid1,
            "kvm": self.kvm.to_json(),
        }
        for name in caps:
            cap = getattr(self, name)
            assert isinstance(cap, Capability)
            out[name] = cap.to_json()
        out.update(
            {
                "cgroup": self.cgroup,
                "cap_sys_resource": self.cap_sys_resource,
                "kernel_modules": self.kernel_modules,
                "mem_available_bytes": self.mem_available_bytes,
                "disk_path": self.disk_path,
                "disk_free_bytes": self.disk_free_bytes,
                "cpu_count": self.cpu_count,
                "tools": dict(self.tools),
            }
        )
        if self.tmpfs_user_xattrs is not None:
            out["tmpfs_user_xattrs"] = self.tmpfs_user_xattrs.to_json()
        return out


def _cgroup_layout(files: HostFiles, mounts: list[Mount]) -> CgroupLayout:
    v1 = [m for m in mounts if m.fstype == "cgroup"]
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    if mounts:
        if any(m.target == "/sys/fs/cgroup" for m in v2) and not v1:
            return "v2"
        if v1 and v2:
            return "hybrid"
        if v1:
            return "v1"
        if v2:
            return "v2"
        return "none"
    # no /proc/mounts: judge from the tree
    if files.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2"
    if files.exists("/sys/fs/cgroup/unified/cgroup.controllers"):
        return "hybrid"
    if files.is_dir("/sys/fs/cgroup") and any(files.path("/sys/fs/cgroup").iterdir()):
        return "v1"
    return "none"


def _systemd_pid1(files: HostFiles) -> bool:
    comm = (files.read("/proc/1/comm") or "").strip()
    # sd_booted() checks /run/systemd/system; comm covers a systemd whose runtime dir is elsewhere
    return comm == "systemd" or files.is_dir("/run/systemd/system")


def _mem_available(files: HostFiles) -> int | None:
    for line in files.lines("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = 1024 if len(parts) < 3 or parts[2].lower() == "kb" else 1
                return int(parts[1]) * unit
    return None


def _disk_free(path: Path) -> int | None:
    probe = path.resolve()
    while not probe.exists() and probe != probe.parent:  # a state dir not created yet: use its parent
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError as exc:
        LOG.debug("statvfs %s: %s", probe, exc)
        return None
    return st.f_bavail * st.f_frsize


def _parse_cpu_list(text: str) -> int:
    count = 0
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        count += int(last) - int(first) + 1 if last else 1
    return count


def _cpu_count(status: dict[str, str]) -> int:
    allowed = status.get("Cpus_allowed_list")
    if allowed:
        try:
            return _parse_cpu_list(allowed)
        except ValueError:
            LOG.debug("unreadable Cpus_allowed_list %r", allowed)
    return os.cpu_count() or 1


def _is_root(status: dict[str, str]) -> bool:
    uids = status.get("Uid", "").split()
    if len(uids) >= 2 and uids[1].isdigit():
        return int(uids[1]) == 0
    return os.geteuid() == 0


def _cap_sys_resource(status: dict[str, str]) -> bool | None:
    cap_eff = status.get("CapEff")
    if not cap_eff:
        return None
    try:
        return bool(int(cap_eff, 16) >> CAP_SYS_RESOURCE & 1)
    except ValueError:
        return None


def find_tools(names: Iterable[str], *, root: Path = Path("/"), path: str | None = None) -> dict[str, str | None]:
    """Like shutil.which for each name, searching PATH plus the sbin directories, under `root`."""
    search = (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep)
    dirs = list(dict.fromkeys([d for d in search if d.startswith("/")] + list(_EXTRA_PATH)))
    found: dict[str, str | None] = {}
    for name in names:
        found[name] = None
        for directory in dirs:
            candidate = root / directory.lstrip("/") / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                found[name] = str(candidate)
                break
    return found


def _kvm_status(
    runner: Runner, files: HostFiles, tools: Mapping[str, str | None], root: Path, *, check_kvm: bool, timeout: float
) -> KvmStatus:
    """KVM as libvirt would use it: the guest probe (unless skipped), else what /dev/kvm says."""
    kvm_present = files.exists("/dev/kvm")
    if check_kvm:
        kvm = probe_kvm(runner, device_present=kvm_present, qemu=tools.get(QEMU), timeout=timeout)
        kvm = kvm_for_libvirt(kvm, root)
    elif kvm_present:
        kvm = KvmStatus(True, None, "KVM guest probe skipped")
    else:
        kvm = KvmStatus(False, False, "/dev/kvm is absent")

    return kvm


def _tmpfs_user_xattrs(runner: Runner, files: HostFiles, root: Path, check: bool | None) -> Capability:
    real = root == Path("/")
    release = (files.read("/proc/sys/kernel/osrelease") or "").strip() or (os.uname().release if real else "")
    if check if check is not None else real:
        return probe_tmpfs_user_xattrs(runner, release)
    return by_kernel_version(release, "probe not run")


def probe_host(
    runner: Runner,
    *,
    root: Path = Path("/"),
    disk_path: Path = Path("."),
    path: str | None = None,
    check_kvm: bool = True,
    kvm_timeout: float = DEFAULT_TIMEOUT,
    check_xattrs: bool | None = None,
) -> HostReport:
    """Read what this host can run. Changes nothing; the commands run are the KVM guest probe and the tmpfs xattr
    probe (in a private mount namespace that dies with it).

    `path` overrides $PATH for the tool search; `check_kvm=False` skips the guest boot (usable_for_guests=None).
    `check_xattrs` runs the tmpfs probe (default: only on the real root, a fake tree answers by its kernel version).
    """
    files = HostFiles(root)
    status = status_fields(files)
    is_root = _is_root(status)
    modules = Modules(files, is_root=is_root)
    mounts = mounts_of(files)
    facts = KernelFacts(filesystems_of(files), {m.fstype for m in mounts}, misc_devices(files), proc_devices(files))
    tools = find_tools(TOOLS, root=root, path=path)

    features = {**storage_features(files, modules, facts), **device_features(files, modules, facts)}
    kvm = _kvm_status(runner, files, tools, root, check_kvm=check_kvm, timeout=kvm_timeout)
    report = HostReport(
        is_root=is_root,
        systemd_pid1=_systemd_pid1(files),
        kvm=kvm,
        **features,
        cgroup=_cgroup_layout(files, mounts),
        cap_sys_resource=_cap_sys_resource(status),
        kernel_modules=modules.enabled,
        mem_available_bytes=_mem_available(files),
        disk_path=str(disk_path),
        disk_free_bytes=_disk_free(disk_path),
        cpu_count=_cpu_count(status),
        tools=tools,
        tmpfs_user_xattrs=_tmpfs_user_xattrs(runner, files, root, check_xattrs),
    )
    LOG.debug("host report: %s", report)
    return report
