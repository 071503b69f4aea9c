"""Container nodes: privileged LXC system containers (systemd as PID 1) on an overlay of the image's rootfs.

Layout, per lab (labs never share an lxcpath): lxcpath = `<state_dir>/lxc` (absolute), container name = the node's
hostname, node dir = `<lxcpath>/<name>` holding
  config          the LXC config, rendered here in full (python3-lxc's set_config_item cannot set lxc.include);
                  its first line is the ownership mark `# stacklab-marker: stacklab:<lab>:node:<name>`
  stacklab.json   the same mark plus the image rootfs and spec hash the container was made from
  delta0/         the overlay upper dir (LXC's own `overlay:LOWER:UPPER` backend, mounted only inside the
                  container); the NoCloud seed goes to delta0/var/lib/cloud/seed/nocloud/ before the first boot
  console.log, lxc.log
Addresses are not in the LXC config: cloud-init's network-config matches each NIC by its MAC. One `veth` per NIC,
its host side named by the spec (`host_ifname`, lab prefix) on the NIC's bridge.

Cgroups: each container gets its own tree `stacklab/<lab>-<hash of lxcpath>/<name>/{payload,monitor,pivot}` in
every hierarchy (`lxc.cgroup.dir.*`), so the `lxc.pivot` cgroup LXC leaves behind on stop is ours alone and
`delete` removes exactly that tree (rmdir only: a cgroup with processes in it is never forced).

Readiness after `lxc-start -d`, each with its own budget: the container is RUNNING, `cloud-init status --wait`
(via lxc-attach) says done, and SSH with the lab key answers on the node's management address.

After a failed apply nothing is left: the container is stopped and destroyed, its cgroups and node dir removed.
Its console and LXC logs are first copied to `<state_dir>/logs/container-<name>.{console,lxc}.log`, and the error
names them. A later `up` therefore starts from scratch. (Restarting an existing, recorded container that then
fails its readiness leaves it as it is: it is in the state file, and `down` removes it.)
An `apply` of an existing container of ours reuses it when its rendered config is unchanged (starting it if it
is stopped), and recreates it otherwise (e.g. a new image rootfs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacklab.drivers.base import BaseDriver, DriverContext
from stacklab.drivers.nodes.image import current_entry
from stacklab.drivers.nodes.seed import (
    MGMT_NETWORK,
    NOCLOUD_SEED_DIR,
    lab_hosts,
    public_key_text,
    render_nocloud,
    write_seed_dir,
)
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.atomic import write_atomic
from stacklab.exec.readiness import NotReady, ReadinessTimeout, wait_until
from stacklab.exec.runner import CommandError, CommandTimeout, Runner
from stacklab.exec.ssh import forget_host_key, wait_for_ssh
from stacklab.plan.resource import Action, Change, Observed, Resource

LOG = logging.getLogger(__name__)

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
SSH_USER = "root"
SSH_PORT = 22
MIB = 1024 * 1024
# PATH inside the node for lxc-attach (the host's PATH may name a pyenv or venv).
NODE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Command timeouts (seconds) for the lxc-* tools.
_INFO_TIMEOUT = 15.0
_START_TIMEOUT = 60.0
_STOP_CLEAN_SECONDS = 30
_KILL_TIMEOUT = 30.0
_DESTROY_TIMEOUT = 120.0
_IP_TIMEOUT = 15.0
_LOG_TAIL_LINES = 25


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
class ReadyBudgets:
    """Seconds allowed for each readiness step after `lxc-start` (the measured total is ~3 s with cloud-init)."""

    running: float = 30.0
    cloud_init: float = 240.0
    ssh: float = 60.0
    # After stop: the monitor process must leave its pivot cgroup, the host veths must disappear.
    cleanup: float = 20.0


# ----------------------------------------------------------------------------------------------------
# Names, paths and the config (pure)


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
    "swift": "object devices on loop-mounted filesystems",
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
        net = f"lxc.net.{index}"
        lines += [
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
    lines += [
        "",
        f"lxc.console.logfile = {_config_value(str(layout.console_log), 'console log')}",
        f"lxc.log.file = {_config_value(str(layout.lxc_log), 'log file')}",
        "lxc.log.level = INFO",
    ]
    devices = [str(d) for d in spec.get("devices", [])]
    unknown = sorted(set(devices) - set(DEVICES))
    if unknown:
        raise PlanError(f"unknown device(s) {unknown} for node {name}", hint=f"known: {sorted(DEVICES)}")
    if devices:
        lines += ["", "# Host devices passed in (optional: a host without one still boots the node)."]
    for device_name in devices:
        device = DEVICES[device_name]
        lines += [
            f"{cgroup.devices_allow} = c {device.major}:{device.minor} rwm",
            f"lxc.mount.entry = {device.source} {device.target} none bind,optional,create=file 0 0",
        ]
    return "\n".join(lines) + "\n"


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


# ----------------------------------------------------------------------------------------------------
# lxc-* commands (through the Runner, so unit tests can fake them)


def lxc_start_argv(layout: ContainerLayout) -> list[str]:
    return ["lxc-start", "-P", str(layout.lxcpath), "-n", layout.name, "-d"]


def lxc_info_argv(layout: ContainerLayout) -> list[str]:
    return ["lxc-info", "-P", str(layout.lxcpath), "-n", layout.name, "-s", "-p", "-H"]


def lxc_attach_argv(layout: ContainerLayout, command: Sequence[str]) -> list[str]:
    return [
        "lxc-attach",
        "-P",
        str(layout.lxcpath),
        "-n",
        layout.name,
        "--clear-env",
        "--set-var",
        NODE_PATH,
        "--",
        *command,
    ]


def parse_lxc_info(text: str) -> tuple[str, int | None]:
    """`State: RUNNING` / `PID: 123` lines -> ("RUNNING", 123)."""
    state, pid = "UNKNOWN", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "State":
            state = value.strip()
        elif key.strip() == "PID" and value.strip().isdigit():
            pid = int(value.strip())
    return state, pid


def container_state(runner: Runner, layout: ContainerLayout) -> tuple[str, int | None]:
    """("RUNNING" | "STOPPED" | ..., init pid); ("MISSING", None) when LXC does not know the container."""
    result = runner.run(lxc_info_argv(layout), timeout=_INFO_TIMEOUT, check=False)
    if not result.ok:
        if "doesn't exist" in result.stderr + result.stdout:
            return "MISSING", None
        raise CommandError(result)
    return parse_lxc_info(result.stdout)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:]) or "(empty)"


# ----------------------------------------------------------------------------------------------------
# Host cleanup helpers (cgroups, veths)


def cgroup_mounts(mounts_file: Path = Path("/proc/self/mounts")) -> list[Path]:
    """Mount points of every cgroup v1 hierarchy and the cgroup2 tree on this host."""
    out = []
    try:
        text = mounts_file.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] in ("cgroup", "cgroup2"):
            out.append(Path(fields[1].replace("\\040", " ")))
    return out


def remove_cgroup_tree(base: str, mounts: Sequence[Path]) -> list[Path]:
    """rmdir the container's tree `base` in every hierarchy, deepest first, then its empty `stacklab/<lab>` parents.

    rmdir only: a cgroup that still holds processes stays (and is returned). Paths outside `base` are never
    touched, except the two parent levels named `stacklab` and `stacklab/<lab>-<hash>`, and only when empty.
    """
    if not base.startswith("stacklab/") or ".." in Path(base).parts:
        raise ValueError(f"refusing to remove cgroup tree {base!r}: not a stacklab tree")
    left: list[Path] = []
    for mount in mounts:
        top = mount / base
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                continue
            except OSError as exc:
                LOG.debug("cgroup %s not removed yet: %s", dirpath, exc)
                left.append(Path(dirpath))
        for parent in (top.parent, top.parent.parent):  # stacklab/<lab>-<hash>, then stacklab
            try:
                parent.rmdir()
            except OSError:
                break  # not empty (other nodes, other labs) or already gone
    return left


def link_exists(ifname: str, sys_class_net: Path = Path("/sys/class/net")) -> bool:
    return (sys_class_net / ifname).exists()


# ----------------------------------------------------------------------------------------------------
# The driver


@dataclass
class ContainerDriver(BaseDriver):
    """The `node` resource for spec kind "container" (routed here by drivers/nodes/node.py).

    Stateless apart from its settings: nodes are applied in parallel from one instance.
    """

    budgets: ReadyBudgets = field(default_factory=ReadyBudgets)
    # Injectable for unit tests: SSH readiness (host, key_file, budget, **kw) -> seconds.
    ssh_waiter: Callable[..., float] = wait_for_ssh
    cgroup_keys: Callable[[], CgroupKeys] = detect_cgroup_keys
    cgroup_mounts: Callable[[], list[Path]] = cgroup_mounts
    link_exists: Callable[[str], bool] = link_exists
    poll_interval: float = 0.2

    kind = "node"

    # -- observe --------------------------------------------------------------------------------------

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        spec = resource.spec
        layout = ContainerLayout.for_lab(ctx.state_dir, str(spec.get("hostname") or resource.name))
        try:
            config_text = layout.config.read_text()
        except FileNotFoundError:
            return None
        if marker_of(config_text) != spec.get("marker"):
            return Observed(owned=False, facts={"config": str(layout.config), "marker": marker_of(config_text)})
        state, pid = container_state(ctx.runner, layout)
        drift: list[str] = []
        if state == "MISSING":
            drift.append("config present but LXC does not list the container")
        elif state != "RUNNING":
            drift.append("stopped" if state == "STOPPED" else f"state {state}")
        wanted = current_entry(ctx, str(spec.get("image")))
        image_rootfs = wanted.rootfs if wanted else (ctx.outputs.get(f"image/{spec.get('image')}") or {}).get("rootfs")
        current = rootfs_of(config_text)
        if image_rootfs and current and os.path.normpath(str(image_rootfs)) != os.path.normpath(current):
            drift.append(f"image rootfs changed: {current} -> {image_rootfs}")
        facts = {"state": state.lower(), "pid": pid, "lxcpath": str(layout.lxcpath), "name": layout.name}
        return Observed(owned=True, facts=facts, drift=tuple(drift))

    # -- apply ----------------------------------------------------------------------------------------

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        if change.action is Action.DELETE:
            raise ValueError("deletions go through delete()")
        resource = change.resource
        spec = resource.spec
        if spec.get("kind") != "container":
            raise PlanError(f"ContainerDriver got a node of kind {spec.get('kind')!r}", resource=resource.id)
        lab = ctx.lab.name
        layout = ContainerLayout.for_lab(ctx.state_dir, str(spec.get("hostname") or resource.name))
        rootfs = Path(str(ctx.output(f"image/{spec['image']}", "rootfs")))
        if not rootfs.is_dir():
            raise StackLabError(
                f"image rootfs {rootfs} does not exist", resource=resource.id, hint="is the image built?"
            )
        key_file = str(ctx.output(f"sshkey/{lab}", "private_key"))
        config_text = render_lxc_config(lab=lab, spec=spec, layout=layout, rootfs=rootfs, cgroup=self.cgroup_keys())

        if layout.config.exists():
            existing = layout.config.read_text()
            if marker_of(existing) != spec["marker"]:
                raise PlanError(
                    f"container {layout.name} in {layout.lxcpath} is not owned by this node",
                    resource=resource.id,
                    hint="stacklab never touches foreign containers; remove it by hand",
                )
            if existing == config_text:
                LOG.info("container %s: reusing the existing container (%s)", layout.name, change.action.value)
                return self._start_and_wait(ctx, resource, layout, key_file=key_file, fresh=False)
            LOG.info("container %s: config changed, recreating (%s)", layout.name, "; ".join(change.reasons))
            self._remove(ctx, layout, spec)
        elif layout.node_dir.exists():
            self._remove_leftover_dir(layout, spec, resource.id)

        try:
            self._create(ctx, resource, layout, config_text, rootfs)
            return self._start_and_wait(ctx, resource, layout, key_file=key_file, fresh=True)
        except BaseException as exc:
            saved = self._save_logs(ctx, layout)
            LOG.info("container %s: apply failed; removing it (logs kept in %s)", layout.name, saved or "-")
            try:
                self._remove(ctx, layout, spec)
            except Exception:
                LOG.exception("container %s: cleanup after a failed apply failed too", layout.name)
            if isinstance(exc, StackLabError) and saved:
                kept = f"the node was removed; its logs are kept in {', '.join(map(str, saved))}"
                raise StackLabError(
                    f"{exc.message}\nlast lines of {saved[0]}:\n{_tail(saved[0])}",
                    hint=f"{exc.hint}; {kept}" if exc.hint else kept,
                    resource=exc.resource or resource.id,
                ) from exc
            raise

    def _remove_leftover_dir(self, layout: ContainerLayout, spec: Mapping[str, Any], rid: str) -> None:
        """A node dir without a config: a create that died before writing it. Remove it if it is ours."""
        marker = None
        with contextlib.suppress(OSError, ValueError):
            marker = json.loads(layout.meta.read_text()).get("marker")
        if marker not in (None, spec["marker"]):
            raise PlanError(f"{layout.node_dir} belongs to {marker}", resource=rid, hint="remove it by hand")
        LOG.info("container %s: removing the leftovers of an earlier failed create", layout.name)
        shutil.rmtree(layout.node_dir)

    def _create(
        self, ctx: DriverContext, resource: Resource, layout: ContainerLayout, config_text: str, rootfs: Path
    ) -> None:
        """The node dir, its marker, the seed in the upper dir, and last the config (so a config means complete)."""
        spec = resource.spec
        lab = ctx.lab.name
        public_key = public_key_text(str(ctx.output(f"sshkey/{lab}", "public_key")))
        files = render_nocloud(
            lab_name=lab, node_name=resource.name, node_spec=spec, public_key=public_key, hosts=lab_hosts(ctx)
        )
        layout.node_dir.mkdir(mode=0o750, parents=True)  # parents: the lxcpath (another node may remove it)
        meta = {
            "marker": spec["marker"],
            "lab": lab,
            "node": resource.name,
            "rootfs": str(rootfs),
            "spec_hash": resource.hash,
        }
        write_atomic(layout.meta, json.dumps(meta, indent=2, sort_keys=True) + "\n", mode=0o644)
        layout.delta.mkdir(mode=0o755)
        write_seed_dir(files, layout.seed_dir)
        if FILE_HANDLES in spec.get("features", []):
            write_atomic(layout.seccomp, SECCOMP_WITH_FILE_HANDLES, mode=0o644)
        write_atomic(layout.config, config_text, mode=0o644)
        LOG.info("container %s: defined in %s on %s", layout.name, layout.lxcpath, rootfs)

    def _start_and_wait(
        self, ctx: DriverContext, resource: Resource, layout: ContainerLayout, *, key_file: str, fresh: bool
    ) -> Mapping[str, Any]:
        spec = resource.spec
        name = layout.name
        host = bare_address(str(mgmt_nic(spec)["address"]))
        known_hosts = ctx.state_dir / "known_hosts"
        if fresh:
            # cloud-init generates new host keys for a new container.
            forget_host_key(known_hosts, host, SSH_PORT)
        state, _pid = container_state(ctx.runner, layout)
        start = time.monotonic()
        if state != "RUNNING":
            ctx.progress(f"starting container {name}")
            if not fresh:
                layout.console_log.unlink(missing_ok=True)
            ctx.runner.run(lxc_start_argv(layout), timeout=_START_TIMEOUT)
        budgets = self.budgets

        def running() -> bool:
            current, pid = container_state(ctx.runner, layout)
            if current == "RUNNING" and pid:
                return True
            if current in ("STOPPED", "MISSING"):
                raise StackLabError(
                    f"container {name} stopped right after lxc-start; LXC log ({layout.lxc_log}):\n"
                    + _tail(layout.lxc_log),
                    resource=resource.id,
                )
            raise NotReady(f"state {current}")

        wait_until(
            running,
            budget=budgets.running,
            interval=self.poll_interval,
            what=f"container {name} to be RUNNING",
            resource=resource.id,
        )
        ctx.progress(f"waiting for {name}: cloud-init (budget {budgets.cloud_init:g}s)")
        self._wait_cloud_init(ctx.runner, layout, resource.id, budgets.cloud_init)
        ctx.progress(f"waiting for {name}: SSH on {host} (budget {budgets.ssh:g}s)")
        self.ssh_waiter(
            host,
            Path(key_file),
            budgets.ssh,
            user=SSH_USER,
            port=SSH_PORT,
            known_hosts=known_hosts,
            resource=resource.id,
        )
        ready = time.monotonic() - start
        LOG.info("container %s: RUNNING, cloud-init done and SSH ready %.2fs after start", name, ready)
        return container_outputs(spec=spec, layout=layout, key_file=key_file, ready_seconds=ready)

    def _wait_cloud_init(self, runner: Runner, layout: ContainerLayout, rid: str, budget: float) -> None:
        argv = lxc_attach_argv(layout, ["cloud-init", "status", "--wait", "--long"])
        try:
            result = runner.run(argv, timeout=budget, check=False)
        except CommandTimeout as exc:
            raise ReadinessTimeout(
                f"cloud-init in container {layout.name} to finish",
                budget,
                "`cloud-init status --wait` still waiting",
                1,
                hint=f"see {layout.console_log} and /var/log/cloud-init.log in the node",
                resource=rid,
            ) from exc
        status = _status_line(result.stdout)
        if result.ok and status == "done":
            return
        state, _pid = container_state(runner, layout)
        if state != "RUNNING":
            raise StackLabError(
                f"container {layout.name} stopped while booting (state {state})",
                resource=rid,
                hint=f"see {layout.console_log} and {layout.lxc_log}",
            )
        detail = (result.stdout.strip() or result.stderr.strip() or f"exit code {result.returncode}")[-2000:]
        raise StackLabError(
            f"cloud-init in container {layout.name} did not finish cleanly (status {status or '?'}):\n{detail}",
            resource=rid,
            hint="see /var/log/cloud-init.log in the node (lxc-attach -P "
            f"{layout.lxcpath} -n {layout.name} -- less /var/log/cloud-init.log)",
        )

    def _save_logs(self, ctx: DriverContext, layout: ContainerLayout) -> list[Path]:
        saved = []
        logs = ctx.state_dir / "logs"
        for source, suffix in ((layout.console_log, "console"), (layout.lxc_log, "lxc")):
            if source.is_file():
                logs.mkdir(parents=True, exist_ok=True)
                dest = logs / f"container-{layout.name}.{suffix}.log"
                try:
                    shutil.copyfile(source, dest)
                    saved.append(dest)
                except OSError as exc:
                    LOG.warning("could not keep %s: %s", source, exc)
        return saved

    # -- delete ---------------------------------------------------------------------------------------

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        node = resource_id.split("/", 1)[-1]
        spec: Mapping[str, Any] = recorded.get("spec", {})
        outputs: Mapping[str, Any] = recorded.get("outputs", {})
        name = str(outputs.get("name") or spec.get("hostname") or node)
        layout = ContainerLayout.for_lab(ctx.state_dir, name)
        if outputs.get("lxcpath"):
            layout = ContainerLayout(Path(os.path.abspath(str(outputs["lxcpath"]))), name)
        if layout.config.exists():
            marker = marker_of(layout.config.read_text())
            if spec.get("marker") and marker != spec["marker"]:
                raise StackLabError(
                    f"container {name} in {layout.lxcpath} carries the mark {marker!r}, not {spec['marker']!r}",
                    resource=resource_id,
                    hint="stacklab never removes what it does not own; remove it by hand",
                )
        self._remove(ctx, layout, spec)
        if host := outputs.get("ssh", {}).get("host"):
            forget_host_key(ctx.state_dir / "known_hosts", str(host), int(outputs["ssh"].get("port", SSH_PORT)))

    def _remove(self, ctx: DriverContext, layout: ContainerLayout, spec: Mapping[str, Any]) -> None:
        """Stop (clean, then kill), destroy, remove the cgroup tree, the veths and the node dir. Idempotent."""
        name = layout.name
        if layout.config.exists():
            state, _pid = container_state(ctx.runner, layout)
            if state not in ("STOPPED", "MISSING"):
                self._stop(ctx.runner, layout)
            ctx.runner.run(["lxc-destroy", "-P", str(layout.lxcpath), "-n", name], timeout=_DESTROY_TIMEOUT, check=True)
            LOG.info("container %s: destroyed", name)
        if layout.node_dir.exists():
            shutil.rmtree(layout.node_dir)
        base = cgroup_base(ctx.lab.name, layout.lxcpath, name)
        mounts = self.cgroup_mounts()

        def cgroups_gone() -> bool:
            left = remove_cgroup_tree(base, mounts)
            if left:
                raise NotReady(f"{len(left)} cgroup(s) still busy, e.g. {left[0]}")
            return True

        wait_until(
            cgroups_gone,
            budget=self.budgets.cleanup,
            interval=self.poll_interval,
            what=f"the cgroups of container {name} ({base}) to be removable",
            hint="a process is still in the container's cgroup; see `cat /sys/fs/cgroup/*/" + base + "/*/cgroup.procs`",
        )
        self._ensure_veths_gone(ctx.runner, name, spec)
        with contextlib.suppress(OSError):  # other nodes still there, or already gone
            layout.lxcpath.rmdir()

    def _stop(self, runner: Runner, layout: ContainerLayout) -> None:
        base = ["lxc-stop", "-P", str(layout.lxcpath), "-n", layout.name]
        try:
            # -t: clean shutdown (SIGPWR to systemd), hard stop after the timeout.
            runner.run([*base, "-t", str(_STOP_CLEAN_SECONDS)], timeout=_STOP_CLEAN_SECONDS + 30)
            LOG.info("container %s: stopped", layout.name)
            return
        except (CommandError, CommandTimeout) as exc:
            LOG.warning("container %s: clean stop failed (%s); killing it", layout.name, str(exc).splitlines()[0])
        state, _pid = container_state(runner, layout)
        if state not in ("STOPPED", "MISSING"):
            runner.run([*base, "-k"], timeout=_KILL_TIMEOUT)

    def _ensure_veths_gone(self, runner: Runner, name: str, spec: Mapping[str, Any]) -> None:
        """LXC removes the host side of each veth with the container's netns; delete any left behind."""
        ifnames = [str(n["host_ifname"]) for n in spec.get("nics", []) if n.get("host_ifname")]
        for ifname in ifnames:
            if self.link_exists(ifname):
                LOG.info("container %s: removing leftover veth %s", name, ifname)
                result = runner.run(["ip", "link", "delete", "dev", ifname], timeout=_IP_TIMEOUT, check=False)
                if not result.ok and self.link_exists(ifname):
                    raise CommandError(result)

        def gone() -> bool:
            left = [i for i in ifnames if self.link_exists(i)]
            if left:
                raise NotReady(f"still present: {', '.join(left)}")
            return True

        if ifnames:
            wait_until(
                gone,
                budget=self.budgets.cleanup,
                interval=self.poll_interval,
                what=f"the host veths of container {name} to disappear",
            )


def _status_line(stdout: str) -> str | None:
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "status":
            return value.strip()
    return None
