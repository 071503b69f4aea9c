"""Kernel features the doctor reports (device-mapper, configfs, LIO, nfsd, NFS, iSCSI, RBD, NBD, loop, overlayfs,
FUSE): each is available when evidence on the host says so, or when a module that provides it can be loaded."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stacklab.host.procfs import HostFiles, Modules


@dataclass(frozen=True)
class Capability:
    """One kernel feature: whether it is usable, and the evidence (or what was looked for) in words."""

    available: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"available": self.available, "detail": self.detail}


def feature(
    modules: Modules,
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


@dataclass(frozen=True)
class KernelFacts:
    """What /proc says about filesystems, mounts, misc and block devices (read once per probe)."""

    filesystems: set[str]
    mounted: set[str]
    misc: set[str]
    devices: set[str]


def storage_features(files: HostFiles, modules: Modules, facts: KernelFacts) -> dict[str, Capability]:
    """Device-mapper, configfs and the kernel's storage servers and clients (LIO, nfsd, NFS)."""
    filesystems, mounted, misc, devices = facts.filesystems, facts.mounted, facts.misc, facts.devices
    device_mapper = feature(
        modules,
        what="device-mapper",
        evidence=[
            ("device-mapper" in misc, "device-mapper in /proc/misc"),
            (files.exists("/dev/mapper/control"), "/dev/mapper/control"),
            ("device-mapper" in devices, "device-mapper in /proc/devices"),
        ],
        module_names=["dm_mod"],
    )
    configfs = feature(
        modules,
        what="configfs",
        evidence=[
            ("configfs" in mounted, "configfs mounted"),
            ("configfs" in filesystems, "configfs in /proc/filesystems"),
        ],
        module_names=["configfs"],
    )
    lio_target = feature(
        modules,
        what="LIO target core",
        evidence=[(files.is_dir("/sys/kernel/config/target"), "/sys/kernel/config/target")],
        module_names=["target_core_mod"] if configfs.available else [],
    )
    if not configfs.available:
        lio_target = Capability(False, f"LIO needs configfs: {configfs.detail}")
    nfsd = feature(
        modules,
        what="kernel NFS server",
        evidence=[("nfsd" in filesystems, "nfsd in /proc/filesystems")],
        module_names=["nfsd"],
    )
    nfs_client = feature(
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


def device_features(files: HostFiles, modules: Modules, facts: KernelFacts) -> dict[str, Capability]:
    """Block devices and filesystems that nodes and guests use: iSCSI initiator, RBD, NBD, loop, overlayfs, FUSE."""
    filesystems, misc = facts.filesystems, facts.misc
    iscsi_initiator = feature(
        modules,
        what="kernel iSCSI initiator",
        evidence=[(files.is_dir("/sys/class/iscsi_transport"), "/sys/class/iscsi_transport")],
        module_names=["iscsi_tcp"],
    )
    rbd = feature(
        modules,
        what="kernel RBD",
        evidence=[(files.is_dir("/sys/bus/rbd"), "/sys/bus/rbd")],
        module_names=["rbd"],
    )
    nbd = feature(
        modules,
        what="NBD",
        evidence=[
            (files.exists("/sys/block/nbd0"), "/sys/block/nbd0"),
            (files.exists("/dev/nbd0"), "/dev/nbd0"),
        ],
        module_names=["nbd"],
    )
    loop = feature(
        modules,
        what="loop devices",
        evidence=[
            (files.exists("/dev/loop-control"), "/dev/loop-control"),
            ("loop-control" in misc, "loop-control in /proc/misc"),
        ],
        module_names=["loop"],
    )
    overlayfs = feature(
        modules,
        what="overlayfs",
        evidence=[("overlay" in filesystems, "overlay in /proc/filesystems")],
        module_names=["overlay"],
    )
    fuse = feature(
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
