"""inotify instances: a per-user kernel budget that container nodes spend fast.

Every privileged container runs as the host's root, and its systemd, journald, logind and udev each hold inotify
instances (8-13 a booted container, measured on Debian 12 images) against root's `fs.inotify.max_user_instances`
(128 by default). A container that cannot get one dies at boot with "Failed to allocate manager object: Too many
open files" on its console: at the default, about ten containers in all fit on a host, so the second aio lab (six
containers) failed that way here. The planner refuses first, with the setting to raise (stacklab never changes a
host sysctl itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PER_CONTAINER = 13  # the most a booted container held here (8-13); more would refuse labs that fit (CI: 8 nodes)
INOTIFY = "anon_inode:inotify"


@dataclass(frozen=True)
class InotifyUse:
    limit: int  # fs.inotify.max_user_instances
    used: int  # instances root's processes hold, those of the lab's own containers left out


def _instances(pid_dir: Path) -> int:
    try:
        fds = list((pid_dir / "fd").iterdir())
    except OSError:
        return 0
    count = 0
    for fd in fds:
        try:
            count += os.readlink(fd) == INOTIFY
        except OSError:
            continue
    return count


def inotify_use(proc: Path = Path("/proc"), *, skip_cgroup: str = "", uid: int = 0) -> InotifyUse | None:
    """`uid`'s (root's) inotify instances and their limit; processes whose cgroup path contains `skip_cgroup` (the lab's
    own containers, already counted in its plan) are left out. None when /proc cannot say."""
    try:
        limit = int((proc / "sys/fs/inotify/max_user_instances").read_text())
    except (OSError, ValueError):
        return None
    used = 0
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if pid_dir.stat().st_uid != uid:
                continue
            if skip_cgroup and skip_cgroup in (pid_dir / "cgroup").read_text():
                continue
        except OSError:
            continue
        used += _instances(pid_dir)
    return InotifyUse(limit, used)


def inotify_problem(use: InotifyUse | None, containers: int) -> str | None:
    """Why `containers` more container nodes would not boot on this host, or None."""
    if use is None or containers == 0:
        return None
    need = containers * PER_CONTAINER
    if use.used + need <= use.limit:
        return None
    return (
        f"nodes: the lab's {containers} container node(s) need about {need} inotify instances; root holds "
        f"{use.used} of fs.inotify.max_user_instances = {use.limit}, so they would die at boot with 'Too many open "
        f"files' (raise it: sysctl -w fs.inotify.max_user_instances={max(1024, use.used + need)}, and in "
        "/etc/sysctl.d/ to keep it, or take other labs down)"
    )
