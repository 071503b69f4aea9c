"""Pure parts of a container node: names and paths, the cgroup layout, why it is privileged, and the LXC config
rendered from a node spec (golden-tested: tests/golden/lxc)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacklab.drivers.nodes.seed import (
    MGMT_NETWORK,
    NOCLOUD_SEED_DIR,
)
from stacklab.errors import PlanError, StackLabError

LOG = logging.getLogger(__name__)

SSH_USER = "root"
SSH_PORT = 22
MIB = 1024 * 1024
MARKER_PREFIX = "# stacklab-marker: "


COMMON_CONF = "/usr/share/lxc/config/common.conf"


# Node feature (spec `features`): the node serves files by handle (nfs-ganesha FSAL_VFS).
FILE_HANDLES = "file-handles"


# LXC's common.seccomp (Debian's lxc 5.0) without `open_by_handle_at errno 1`.
SECCOMP_WITH_FILE_HANDLES = """2
denylist
reject_force_umount
[all]
kexec_load errno 1
init_module errno 1
finit_module errno 1
delete_module errno 1
"""


@dataclass(frozen=True)
class Device:
    major: int
    minor: int
    source: str  # host path
    target: str  # path in the container, relative to its root


# Host devices a node may ask for (lab `devices:`), bind-mounted with `optional` so a host without one still boots.
DEVICES: Mapping[str, Device] = {
    "kvm": Device(10, 232, "/dev/kvm", "dev/kvm"),
    "tun": Device(10, 200, "/dev/net/tun", "dev/net/tun"),
    "fuse": Device(10, 229, "/dev/fuse", "dev/fuse"),
}


@dataclass(frozen=True)
class ContainerLayout:
    """Where one container's files live. `lxcpath` must be absolute (LXC misreports relative ones)."""

    lxcpath: Path
    name: str

    def __post_init__(self) -> None:
        if not self.lxcpath.is_absolute():
            raise ValueError(f"lxcpath must be absolute, got {self.lxcpath}")

    @classmethod
    def for_lab(cls, state_dir: Path, name: str) -> ContainerLayout:
        return cls(Path(os.path.abspath(state_dir / "lxc")), name)

    @property
    def node_dir(self) -> Path:
        return self.lxcpath / self.name

    @property
    def config(self) -> Path:
        return self.node_dir / "config"

    @property
    def meta(self) -> Path:
        return self.node_dir / "stacklab.json"

    @property
    def seccomp(self) -> Path:
        return self.node_dir / "seccomp"

    @property
    def delta(self) -> Path:
        return self.node_dir / "delta0"

    @property
    def seed_dir(self) -> Path:
        return self.delta / NOCLOUD_SEED_DIR

    @property
    def console_log(self) -> Path:
        return self.node_dir / "console.log"

    @property
    def lxc_log(self) -> Path:
        return self.node_dir / "lxc.log"


# Why a node with these roles needs a privileged container (its uid 0 is the host's root, no idmap). Every node is
# privileged today: the image rootfs is shared and owned by the host's root, so even a role-less node would need an
# id-shifted copy (or idmapped mounts) to run unprivileged; that is not implemented. The README's Security section
# says what a privileged, unconfined node can do to the host.
PRIVILEGED_BECAUSE = {
    "storage": "LVM (device-mapper), loop-backed LUNs, Ceph OSDs and file handles for NFS need host devices",
    "compute": "libvirt/QEMU need /dev/kvm, their own namespaces and cgroups for the guests",
    "client": "loop devices and the iSCSI/NFS/RBD clients the suites run",
    "swift": "its object devices are tmpfs mounts the node makes itself (mount units inside the node)",
    "controller": "only the shared image rootfs (owned by the host's root) keeps it from running unprivileged",
}


NO_ROLE_REASON = "only the shared image rootfs (owned by the host's root) keeps it from running unprivileged"


def isolation_of(spec: Mapping[str, Any]) -> str:
    """Pure: how a container node spec runs and why, for `stacklab plan` (e.g. `privileged: storage needs ...`)."""
    roles = [str(r) for r in spec.get("roles", [])]
    reasons = [f"{role}: {PRIVILEGED_BECAUSE[role]}" for role in roles if role in PRIVILEGED_BECAUSE]
    return "privileged, unconfined LXC container (" + ("; ".join(reasons) or NO_ROLE_REASON) + ")"


def cgroup_lab_dir(lab: str, lxcpath: Path) -> str:
    """The cgroup directory holding all of one lab's containers (relative to each hierarchy's root)."""
    digest = hashlib.sha1(str(lxcpath).encode()).hexdigest()[:6]
    return f"stacklab/{lab}-{digest}"


def cgroup_base(lab: str, lxcpath: Path, name: str) -> str:
    """The container's own cgroup tree (relative to each hierarchy's root), unique per lab directory and node."""
    return f"{cgroup_lab_dir(lab, lxcpath)}/{name}"


@dataclass(frozen=True)
class CgroupKeys:
    """Which LXC keys set limits on this host: v1 (`lxc.cgroup.*`, hybrid hosts) or v2 (`lxc.cgroup2.*`)."""

    devices_allow: str = "lxc.cgroup.devices.allow"
    memory_limit: str | None = "lxc.cgroup.memory.limit_in_bytes"


CGROUP_V1 = CgroupKeys()
CGROUP_V2 = CgroupKeys("lxc.cgroup2.devices.allow", "lxc.cgroup2.memory.max")


def detect_cgroup_keys(root: Path = Path("/sys/fs/cgroup")) -> CgroupKeys:
    """v1 keys where the v1 controller is mounted (hybrid hosts such as the CI host), else v2 keys."""
    devices = CGROUP_V1.devices_allow if (root / "devices" / "devices.allow").exists() else CGROUP_V2.devices_allow
    memory: str | None
    if (root / "memory" / "memory.limit_in_bytes").exists():
        memory = CGROUP_V1.memory_limit
    elif _v2_has_memory(root):
        memory = CGROUP_V2.memory_limit
    else:
        LOG.info("no memory cgroup controller found under %s: container memory limits are not set", root)
        memory = None
    return CgroupKeys(devices, memory)


def _v2_has_memory(root: Path) -> bool:
    for candidate in (root / "cgroup.controllers", root / "unified" / "cgroup.controllers"):
        try:
            if "memory" in candidate.read_text().split():
                return True
        except OSError:
            continue
    return False


def _config_value(value: str, what: str, *, forbid: str = "") -> str:
    bad = [c for c in "\n\r\0" + forbid if c in value]
    if bad or not value:
        raise StackLabError(
            f"{what} {value!r} cannot go into an LXC config (empty, or contains {bad!r})",
            hint="use a state directory and image cache path without spaces or colons",
        )
    return value


def mgmt_nic(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """The NIC SSH and the default route use: the one on the `mgmt` network, else the first."""
    nics: Sequence[Mapping[str, Any]] = spec.get("nics", [])
    if not nics:
        raise PlanError("a container node needs at least one NIC (SSH readiness goes over it)")
    return next((n for n in nics if n.get("network") == MGMT_NETWORK), nics[0])


def bare_address(cidr_address: str) -> str:
    return cidr_address.split("/", 1)[0]


def node_addresses_of(spec: Mapping[str, Any]) -> dict[str, str]:
    return {str(nic["network"]): bare_address(str(nic["address"])) for nic in spec.get("nics", [])}


def render_lxc_config(
    *,
    lab: str,
    spec: Mapping[str, Any],
    layout: ContainerLayout,
    rootfs: Path,
    cgroup: CgroupKeys = CGROUP_V1,
) -> str:
    """The whole LXC config for one node spec (pure; the golden test pins it)."""
    name = layout.name
    marker = _config_value(str(spec["marker"]), "marker")
    lower = _config_value(str(rootfs), "image rootfs", forbid=": ")
    upper = _config_value(str(layout.delta), "overlay upper dir", forbid=": ")
    base = cgroup_base(lab, layout.lxcpath, name)
    lines = [
        f"{MARKER_PREFIX}{marker}",
        "# Rendered by stacklab (drivers/container.py); `stacklab up` rewrites it and `down` removes it.",
        f"lxc.uts.name = {name}",
        f"lxc.include = {COMMON_CONF}",
        "lxc.arch = linux64",
        "lxc.apparmor.profile = unconfined",
        f"lxc.rootfs.path = overlay:{lower}:{upper}",
        "",
        "# Own cgroup tree per node: nothing shared with other containers, removable as a whole.",
        f"lxc.cgroup.dir.container = {base}/payload",
        f"lxc.cgroup.dir.monitor = {base}/monitor",
        f"lxc.cgroup.dir.monitor.pivot = {base}/pivot",
    ]
    if FILE_HANDLES in spec.get("features", []):
        lines += [
            "",
            "# File handles (nfs-ganesha's VFS exports): an overlay that can encode and decode them, and LXC's",
            "# seccomp policy without its open_by_handle_at denial (kept for every node that needs no handles).",
            "lxc.rootfs.options = index=on,nfs_export=on",
            f"lxc.seccomp.profile = {_config_value(str(layout.seccomp), 'seccomp profile')}",
        ]
    memory_mib = spec.get("memory_mib")
    if memory_mib and cgroup.memory_limit:
        lines.append(f"{cgroup.memory_limit} = {int(memory_mib) * MIB}")
    for index, nic in enumerate(spec.get("nics", [])):
        lines += _nic_lines(index, nic)
    lines += [
        "",
        f"lxc.console.logfile = {_config_value(str(layout.console_log), 'console log')}",
        f"lxc.log.file = {_config_value(str(layout.lxc_log), 'log file')}",
        "lxc.log.level = INFO",
    ]
    lines += _device_lines(name, [str(d) for d in spec.get("devices", [])], cgroup)
    return "\n".join(lines) + "\n"


def _nic_lines(index: int, nic: Mapping[str, Any]) -> list[str]:
    """One veth NIC on its lab bridge, named and addressed as the spec says (cloud-init sets the address by MAC)."""
    net = f"lxc.net.{index}"
    lines = [
        "",
        f"# NIC {index}: network {nic['network']}, address {nic['address']} (set by cloud-init by MAC)",
        f"{net}.type = veth",
        f"{net}.link = {_config_value(str(nic['bridge']), 'bridge', forbid=' ')}",
        f"{net}.veth.pair = {_config_value(str(nic['host_ifname']), 'host_ifname', forbid=' ')}",
        f"{net}.name = {_config_value(str(nic['device']), 'device', forbid=' ')}",
        f"{net}.hwaddr = {str(nic['mac']).lower()}",
    ]
    if nic.get("mtu"):
        lines.append(f"{net}.mtu = {int(nic['mtu'])}")
    lines.append(f"{net}.flags = up")
    return lines


def _device_lines(name: str, devices: list[str], cgroup: CgroupKeys) -> list[str]:
    """Host devices the node asked for, bind-mounted optionally; an unknown one is a PlanError."""
    unknown = sorted(set(devices) - set(DEVICES))
    if unknown:
        raise PlanError(f"unknown device(s) {unknown} for node {name}", hint=f"known: {sorted(DEVICES)}")
    lines = ["", "# Host devices passed in (optional: a host without one still boots the node)."] if devices else []
    for device_name in devices:
        device = DEVICES[device_name]
        lines += [
            f"{cgroup.devices_allow} = c {device.major}:{device.minor} rwm",
            f"lxc.mount.entry = {device.source} {device.target} none bind,optional,create=file 0 0",
        ]
    return lines


def marker_of(config_text: str) -> str | None:
    for line in config_text.splitlines():
        if line.startswith(MARKER_PREFIX):
            return line[len(MARKER_PREFIX) :].strip()
    return None


def rootfs_of(config_text: str) -> str | None:
    """The overlay's lower dir (the image rootfs) named by a config."""
    for line in config_text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "lxc.rootfs.path":
            parts = value.strip().split(":")
            if len(parts) == 3 and parts[0] == "overlay":
                return parts[1]
    return None


def container_outputs(
    *, spec: Mapping[str, Any], layout: ContainerLayout, key_file: str, ready_seconds: float
) -> dict[str, Any]:
    return {
        "kind": "container",
        "name": layout.name,
        "lxcpath": str(layout.lxcpath),
        "addresses": node_addresses_of(spec),
        "ssh": {
            "host": bare_address(str(mgmt_nic(spec)["address"])),
            "user": SSH_USER,
            "port": SSH_PORT,
            "key": key_file,
        },
        "console_log": str(layout.console_log),
        "ready_seconds": round(ready_seconds, 2),
    }
