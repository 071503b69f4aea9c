"""Host side of container nodes: the lxc-* command lines and state, and the cleanup of what a stopped container
leaves on the host (its cgroup tree, its veths)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from stacklab.drivers.nodes.lxc_config import ContainerLayout
from stacklab.exec.runner import CommandError, Runner

LOG = logging.getLogger(__name__)

# PATH inside the node for lxc-attach (the host's PATH may name a pyenv or venv).
NODE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INFO_TIMEOUT = 15.0
LOG_TAIL_LINES = 25


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


def file_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:]) or "(empty)"


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


def link_exists(ifname: str, sys_class_net: Path | None = None) -> bool:
    """Whether the interface exists in the calling thread's netns. Asked of a socket, not of `/sys/class/net`:
    sysfs shows the netns it was mounted for (the host's), so in a training copy's netns (host/netns.py) it would
    list the original lab's veths of the same names."""
    if sys_class_net is not None:
        return (sys_class_net / ifname).exists()
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True
