"""Mount one NFS export at one directory on a node, as an OpenStack service's storage (glance's file store; nova's
instances_path): a systemd mount unit, so the mount comes back at boot before the service that needs it (the
service's drop-in says `RequiresMountsFor=`, which orders it after the mount and pulls the mount in).

The kernel NFS client of the node mounts `<NFS server's br-storage address>:<export path>` over br-storage; the
lab's knfsd exports are `rw,sync,no_root_squash` to the storage network, so root on the node can give the mounted
directory to the service's user. Observe reads the unit file back and the mount from /proc/mounts (source and
file system type), so a mount made by hand or from elsewhere is drift, not success.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stacklab.drivers.openstack.common import file_problems
from stacklab.errors import StackLabError
from stacklab.exec.node_files import remove_node_files, systemctl, unit_active, write_unit_files
from stacklab.exec.runner import Runner

UNIT_DIR = "/etc/systemd/system"
MOUNT_TIMEOUT = 120.0  # a mount under TCG on a loaded host: rpc.statd, the v4 lease, the first GETATTR
_PLAIN_PART = re.compile(r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*")


@dataclass(frozen=True)
class NfsMount:
    """One export mounted at `where` for `service` (the unit the mount is ordered before)."""

    lab: str
    share: str  # <server address>:<export path>
    where: str  # absolute path of plain parts
    options: str  # the mount options (nfs_mount_options style: vers=4.2)
    service: str  # the systemd unit that needs it

    @property
    def unit(self) -> str:
        return unit_name(self.where)

    @property
    def unit_path(self) -> str:
        return f"{UNIT_DIR}/{self.unit}"


def unit_name(where: str) -> str:
    """systemd's name of the mount unit for `where` (`systemd-escape --path --suffix=mount`), for plain paths: '/'
    becomes '-', a '-' in a part becomes '\\x2d' (pure)."""
    parts = where.strip("/").split("/")
    if not where.startswith("/") or not all(_PLAIN_PART.fullmatch(p) and not p.startswith(".") for p in parts):
        raise ValueError(f"{where!r} is not an absolute path of plain parts")
    return "-".join(p.replace("-", "\\x2d") for p in parts) + ".mount"


def render_unit(mount: NfsMount) -> str:
    """The mount unit (pure). `_netdev` and network-online: the mount waits for the lab NICs; `Before=` the
    service, and the service's own drop-in requires it."""
    return (
        f"# written by stacklab for lab {mount.lab}: {mount.service}'s storage on NFS\n"
        "[Unit]\n"
        f"Description=NFS share {mount.share} for {mount.service}\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        f"Before={mount.service}.service\n"
        "[Mount]\n"
        f"What={mount.share}\n"
        f"Where={mount.where}\n"
        "Type=nfs\n"
        f"Options={mount.options},_netdev\n"
        "TimeoutSec=90\n"
        "[Install]\n"
        "WantedBy=remote-fs.target\n"
    )


def requires_mount(mount: NfsMount) -> str:
    """The `[Unit]` lines a service's drop-in adds so that it starts only on its mount (pure)."""
    return f"[Unit]\nRequiresMountsFor={mount.where}\n"


def mounted_from(runner: Runner, where: str) -> tuple[str, str] | None:
    """(source, fstype) of the mount at `where` per /proc/mounts (the last one, which is what a path resolves to)."""
    text = runner.run(["cat", "/proc/mounts"], timeout=30).stdout
    found = [(f[0], f[2]) for f in (line.split() for line in text.splitlines()) if len(f) > 2 and f[1] == where]
    return found[-1] if found else None


def mount_problems(runner: Runner, mount: NfsMount, node: str) -> list[str]:
    """How the node's mount differs from the plan: the unit file, the unit, the mount's source and type."""
    found = file_problems(runner, {mount.unit_path: render_unit(mount)}, node)
    seen = mounted_from(runner, mount.where)
    if seen is None:
        found.append(f"{mount.where} on {node} is not mounted")
    elif seen[0] != mount.share or not seen[1].startswith("nfs"):
        found.append(f"{mount.where} on {node} is {seen[1]} from {seen[0]}, not NFS from {mount.share}")
    elif not unit_active(runner, mount.unit):
        found.append(f"{mount.unit} is not active on {node}")
    return found


def ensure_mount(runner: Runner, mount: NfsMount, node: str, resource_id: str, *, owner: str = "") -> bool:
    """The mount unit written, enabled and mounted (remounted when the unit changed); `owner` gets the mounted
    directory (user:group). True when anything changed."""
    changed = write_unit_files(runner, {mount.unit_path: render_unit(mount)})
    seen = mounted_from(runner, mount.where)
    runner.run(["mkdir", "-p", mount.where], timeout=30)
    systemctl(runner, "enable", mount.unit)
    if changed or seen is None or seen[0] != mount.share:
        if seen is not None:
            systemctl(runner, "stop", mount.unit, check=False)
        result = runner.run(["systemctl", "restart", mount.unit], timeout=MOUNT_TIMEOUT, check=False)
        if not result.ok:
            status = runner.run(["systemctl", "status", "--no-pager", "-n", "15", mount.unit], timeout=30,
                                check=False).stdout  # fmt: skip
            raise StackLabError(f"{node} could not mount {mount.share} at {mount.where}", resource=resource_id,
                                hint=status[-1500:] or result.stderr[-1500:])  # fmt: skip
        changed = True
    seen = mounted_from(runner, mount.where)
    if seen is None or seen[0] != mount.share or not seen[1].startswith("nfs"):
        raise StackLabError(f"{mount.where} on {node} is {seen} after the mount, not NFS from {mount.share}",
                            resource=resource_id)  # fmt: skip
    if owner:
        runner.run(["chown", owner, mount.where], timeout=60)
    return changed


def remove_mount(runner: Runner, mount: NfsMount) -> None:
    """Unmounted, disabled, its unit file gone (absent parts are fine): the files on the export stay there."""
    systemctl(runner, "disable", "--now", mount.unit, check=False)
    remove_node_files(runner, mount.unit_path)
    systemctl(runner, "daemon-reload", check=False)
