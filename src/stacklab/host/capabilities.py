"""What this host can run: kernel features, init, cgroups, resources and tools, read without changing anything.

`probe_host` reads /proc, /sys and /dev under `root` (a fake tree in unit tests) and uses the runner only for
the one thing a file cannot tell: whether KVM really runs a guest. A kernel feature counts as available when
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
from stacklab.host.kvm_probe import DEFAULT_TIMEOUT, QEMU, KvmStatus, kvm_for_libvirt, probe_kvm

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
class Capability:
    """One kernel feature: whether it is usable, and the evidence (or what was looked for) in words."""

    available: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"available": self.available, "detail": self.detail}


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
        return out


@dataclass(frozen=True)
class _Mount:
    source: str
    target: str
    fstype: str


class _HostFiles:
    """Reads the host's kernel interfaces under `root`; every read tolerates absence."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def exists(self, absolute: str) -> bool:
        return self.path(absolute).exists()

    def is_dir(self, absolute: str) -> bool:
        return self.path(absolute).is_dir()

    def read(self, absolute: str) -> str | None:
        try:
            return self.path(absolute).read_text(errors="replace")
        except OSError:
            return None

    def lines(self, absolute: str) -> list[str]:
        text = self.read(absolute)
        return text.splitlines() if text is not None else []


def _status_fields(files: _HostFiles) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in files.lines("/proc/self/status"):
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _filesystems(files: _HostFiles) -> set[str]:
    # lines look like "nodev\tconfigfs" or "\text4"
    return {line.split()[-1] for line in files.lines("/proc/filesystems") if line.split()}


def _mounts(files: _HostFiles) -> list[_Mount]:
    mounts = []
    for line in files.lines("/proc/mounts"):
        parts = line.split()
        if len(parts) >= 3:
            mounts.append(_Mount(parts[0], parts[1], parts[2]))
    return mounts


def _misc_devices(files: _HostFiles) -> set[str]:
    return {parts[1] for line in files.lines("/proc/misc") if len(parts := line.split()) >= 2}


def _proc_devices(files: _HostFiles) -> set[str]:
    names = set()
    for line in files.lines("/proc/devices"):
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            names.add(parts[1])
    return names


def _norm_module(name: str) -> str:
    return name.replace("-", "_")


def _module_names(lines: Iterable[str]) -> set[str]:
    names = set()
    for line in lines:
        path = line.split(":", 1)[0].strip()
        if path:
            base = path.rsplit("/", 1)[-1]
            names.add(_norm_module(base.split(".ko", 1)[0]))
    return names


class _Modules:
    """Which kernel modules are loaded or built in now, and which could be loaded."""

    def __init__(self, files: _HostFiles, *, is_root: bool) -> None:
        self._files = files
        release = (files.read("/proc/sys/kernel/osrelease") or "").strip()
        base = f"/lib/modules/{release}" if release else None
        self.builtin = _module_names(files.lines(f"{base}/modules.builtin")) if base else set()
        self.enabled = files.exists("/proc/modules") and is_root
        self.loadable = _module_names(files.lines(f"{base}/modules.dep")) if base and self.enabled else set()

    def present(self, name: str) -> bool:
        return self._files.is_dir(f"/sys/module/{_norm_module(name)}")

    def how(self, name: str) -> str | None:
        """Why module `name` is usable ('loaded', 'built in', 'loadable module'), or None."""
        norm = _norm_module(name)
        if self.present(norm):
            return f"module {norm} loaded"
        if norm in self.builtin:
            return f"{norm} built in"
        if norm in self.loadable:
            return f"loadable module {norm}"
        return None


def _feature(
    modules: _Modules,
    *,
    what: str,
    evidence: Iterable[tuple[bool, str]],
    module_names: Iterable[str],
) -> Capability:
    """Available when any (found, description) holds, or one of `module_names` is loaded/built in/loadable."""
    looked = []
    for found, description in evidence:
        if found:
            return Capability(True, description)
        looked.append(description)
    names = list(module_names)
    for name in names:
        how = modules.how(name)
        if how:
            return Capability(True, how)
    if names and not modules.enabled:
        looked.append("kernel modules cannot be loaded")
    elif names:
        looked.append(f"no module {'/'.join(names)}")
    return Capability(False, f"{what} not found (looked for: {'; '.join(looked)})")


def _cgroup_layout(files: _HostFiles, mounts: list[_Mount]) -> CgroupLayout:
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


def _systemd_pid1(files: _HostFiles) -> bool:
    comm = (files.read("/proc/1/comm") or "").strip()
    # sd_booted() checks /run/systemd/system; comm covers a systemd whose runtime dir is elsewhere
    return comm == "systemd" or files.is_dir("/run/systemd/system")


def _mem_available(files: _HostFiles) -> int | None:
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


@dataclass(frozen=True)
class _KernelFacts:
    """What /proc says about filesystems, mounts, misc and block devices (read once per probe)."""

    filesystems: set[str]
    mounted: set[str]
    misc: set[str]
    devices: set[str]


def _storage_features(files: _HostFiles, modules: _Modules, facts: _KernelFacts) -> dict[str, Capability]:
    """Device-mapper, configfs and the kernel's storage servers and clients (LIO, nfsd, NFS)."""
    filesystems, mounted, misc, devices = facts.filesystems, facts.mounted, facts.misc, facts.devices
    device_mapper = _feature(
        modules,
        what="device-mapper",
        evidence=[
            ("device-mapper" in misc, "device-mapper in /proc/misc"),
            (files.exists("/dev/mapper/control"), "/dev/mapper/control"),
            ("device-mapper" in devices, "device-mapper in /proc/devices"),
        ],
        module_names=["dm_mod"],
    )
    configfs = _feature(
        modules,
        what="configfs",
        evidence=[
            ("configfs" in mounted, "configfs mounted"),
            ("configfs" in filesystems, "configfs in /proc/filesystems"),
        ],
        module_names=["configfs"],
    )
    lio_target = _feature(
        modules,
        what="LIO target core",
        evidence=[(files.is_dir("/sys/kernel/config/target"), "/sys/kernel/config/target")],
        module_names=["target_core_mod"] if configfs.available else [],
    )
    if not configfs.available:
        lio_target = Capability(False, f"LIO needs configfs: {configfs.detail}")
    nfsd = _feature(
        modules,
        what="kernel NFS server",
        evidence=[("nfsd" in filesystems, "nfsd in /proc/filesystems")],
        module_names=["nfsd"],
    )
    nfs_client = _feature(
        modules,
        what="kernel NFS client",
        evidence=[
            ("nfs4" in filesystems, "nfs4 in /proc/filesystems"),
            ("nfs" in filesystems, "nfs in /proc/filesystems"),
        ],
        module_names=["nfsv4", "nfs"],
    )
    return {
        "device_mapper": device_mapper,
        "configfs": configfs,
        "lio_target": lio_target,
        "nfsd": nfsd,
        "nfs_client": nfs_client,
    }


def _device_features(files: _HostFiles, modules: _Modules, facts: _KernelFacts) -> dict[str, Capability]:
    """Block devices and filesystems that nodes and guests use: iSCSI initiator, RBD, NBD, loop, overlayfs, FUSE."""
    filesystems, misc = facts.filesystems, facts.misc
    iscsi_initiator = _feature(
        modules,
        what="kernel iSCSI initiator",
        evidence=[(files.is_dir("/sys/class/iscsi_transport"), "/sys/class/iscsi_transport")],
        module_names=["iscsi_tcp"],
    )
    rbd = _feature(
        modules,
        what="kernel RBD",
        evidence=[(files.is_dir("/sys/bus/rbd"), "/sys/bus/rbd")],
        module_names=["rbd"],
    )
    nbd = _feature(
        modules,
        what="NBD",
        evidence=[
            (files.exists("/sys/block/nbd0"), "/sys/block/nbd0"),
            (files.exists("/dev/nbd0"), "/dev/nbd0"),
        ],
        module_names=["nbd"],
    )
    loop = _feature(
        modules,
        what="loop devices",
        evidence=[
            (files.exists("/dev/loop-control"), "/dev/loop-control"),
            ("loop-control" in misc, "loop-control in /proc/misc"),
        ],
        module_names=["loop"],
    )
    overlayfs = _feature(
        modules,
        what="overlayfs",
        evidence=[("overlay" in filesystems, "overlay in /proc/filesystems")],
        module_names=["overlay"],
    )
    fuse = _feature(
        modules,
        what="FUSE",
        evidence=[(files.exists("/dev/fuse") and "fuse" in filesystems, "/dev/fuse and fuse in /proc/filesystems")],
        module_names=["fuse"],
    )
    return {
        "iscsi_initiator": iscsi_initiator,
        "rbd": rbd,
        "nbd": nbd,
        "loop": loop,
        "overlayfs": overlayfs,
        "fuse": fuse,
    }


def _kvm_status(
    runner: Runner, files: _HostFiles, tools: Mapping[str, str | None], root: Path, *, check_kvm: bool, timeout: float
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


def probe_host(
    runner: Runner,
    *,
    root: Path = Path("/"),
    disk_path: Path = Path("."),
    path: str | None = None,
    check_kvm: bool = True,
    kvm_timeout: float = DEFAULT_TIMEOUT,
) -> HostReport:
    """Read what this host can run. Changes nothing; the only command run is the KVM guest probe.

    `path` overrides $PATH for the tool search; `check_kvm=False` skips the guest boot (usable_for_guests=None).
    """
    files = _HostFiles(root)
    status = _status_fields(files)
    is_root = _is_root(status)
    modules = _Modules(files, is_root=is_root)
    mounts = _mounts(files)
    facts = _KernelFacts(_filesystems(files), {m.fstype for m in mounts}, _misc_devices(files), _proc_devices(files))
    tools = find_tools(TOOLS, root=root, path=path)

    features = {**_storage_features(files, modules, facts), **_device_features(files, modules, facts)}
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
    )
    LOG.debug("host report: %s", report)
    return report
