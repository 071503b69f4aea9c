"""Swift's devices on a storage node: d1..dN under /srv/node, of the kind the host allows (`device_kind`):

- `tmpfs` (where tmpfs holds user xattrs, Linux 6.6+): each device a size-capped tmpfs mount of its own (a systemd
  mount unit), so that Swift's mount check (st_dev against the parent's) sees a device that can be unmounted like
  a pulled disk, or filled up. The servers run with `mount_check = true`.
- `directory` (older kernels, e.g. Debian 12's 6.1, whose tmpfs refuses Swift's `user.swift.metadata`): plain
  directories on the node's root file system, which holds user xattrs. No mount point (a bind mount has its
  parent's st_dev; a container node has no loop devices for a file system of its own), so `mount_check = false`:
  the swift_loss suite's unmounted and full device cases are skipped, saying so.

`probe_xattrs` checks at `up` that the devices as made take Swift's xattrs.
"""

from __future__ import annotations

from stacklab.drivers.openstack.common import ServiceLayout
from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner

DEVICES = "/srv/node"
DEVICE_SIZE = "512m"  # each device's tmpfs cap (pages are used only as objects arrive)
TMPFS, DIRECTORY = "tmpfs", "directory"


def device_kind(plan: ServiceLayout) -> str:
    """`tmpfs` or `directory`: the spec records the kind only when it is not tmpfs (plan/expand.py)."""
    return str(plan.config.get("device_kind") or TMPFS)


def mount_check(plan: ServiceLayout) -> bool:
    """Whether the servers check that a device is mounted (only a mount point can be checked)."""
    return device_kind(plan) == TMPFS


def device_names(plan: ServiceLayout) -> list[str]:
    """The devices of every storage node: d1..dN (`openstack.swift.devices`)."""
    return [f"d{i}" for i in range(1, int(plan.config.get("devices") or 1) + 1)]


def mount_unit(device: str) -> str:
    """systemd's name for the mount of DEVICES/<device> (path escaping: '/' -> '-')."""
    return f"{DEVICES.strip('/').replace('/', '-')}-{device}.mount"


def render_mount_unit(plan: ServiceLayout, device: str, owner: tuple[str, str]) -> str:
    """The device's mount: a tmpfs of its own owned by swift (`owner`: its numeric uid and gid on the node)."""
    uid, gid = owner
    return (
        f"# written by stacklab for lab {plan.lab}: swift device {device}, a file system of its own as a disk\n"
        "[Unit]\n"
        f"Description=swift device {device} (stacklab)\n"
        "[Mount]\n"
        "What=tmpfs\n"
        f"Where={DEVICES}/{device}\n"
        "Type=tmpfs\n"
        f"Options=size={DEVICE_SIZE},mode=0750,uid={uid},gid={gid}\n"
        "LazyUnmount=yes\n"  # a replicator may hold a file there: unmount like a pulled disk, not EBUSY
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def swift_owner(runner: Runner) -> tuple[str, str]:
    """The swift user's numeric uid and gid on the node (a tmpfs takes numbers only)."""
    return (runner.run(["id", "-u", "swift"], timeout=30).stdout.strip(),
            runner.run(["id", "-g", "swift"], timeout=30).stdout.strip())  # fmt: skip


XATTR_PROBE = (
    "import os, sys\n"
    "path = os.path.join(sys.argv[1], '.stacklab-xattr-probe')\n"
    "open(path, 'w').close()\n"
    "try:\n"  # an object's metadata: a few hundred bytes (a 4 KiB value would not fit ext4's one xattr block)
    "    for key in ('user.swift.metadata', 'user.swift.metadata1', 'user.swift.metadata2'):\n"
    "        os.setxattr(path, key, b'x' * 254)\n"
    "finally:\n"
    "    os.unlink(path)\n"
)


def probe_xattrs(runner: Runner, node: str, device: str) -> None:
    """Swift keeps object metadata in user xattrs; tmpfs has them from Linux 6.6 on."""
    result = runner.run(["runuser", "-u", "swift", "--", "python3", "-c", XATTR_PROBE, f"{DEVICES}/{device}"],
                        timeout=30, check=False)  # fmt: skip
    if not result.ok:
        raise StackLabError(
            f"swift device {DEVICES}/{device} on {node} takes no user xattrs: {result.stderr.strip()[-300:]}",
            resource="service/swift",
            hint="a tmpfs device holds user xattrs from Linux 6.6 on: leave openstack.swift.device_kind at auto "
            "(stacklab picks plain directories on such a host) or set it to directory; a directory device needs a "
            "node root file system with user xattrs",
        )


def fstype(runner: Runner, path: str) -> str:
    """The file system type mounted at `path` ('' when nothing is)."""
    return runner.run(["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", path], timeout=30, check=False).stdout.strip()
