"""Named network namespaces (`/run/netns/<name>`, as `ip netns` makes them) that stacklab creates and owns.

A training copy of a lab lives in its own netns (engine/copies.py), so N copies keep the original's bridge names,
CIDRs and node addresses side by side. A netns carries no mark of its own (no ifalias), so ownership is the
record the caller keeps: the name and the namespace's inode, taken right after `ip netns add`. `delete` removes a
netns only when the name still points at that inode; a netns of the same name it did not create is never touched.

`entered(name)` moves the calling thread into the netns and back (setns(2) is per thread): everything the thread
starts meanwhile, processes through the Runner and new threads alike, is born there, and so are sockets it opens
(netlink for pyroute2, TCP for paramiko). Only the network namespace changes; the mount namespace stays the host's
(so `/sys/class/net` still lists the host's interfaces: ask a socket, `socket.if_nametoindex`, instead).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
from collections.abc import Iterator
from pathlib import Path

from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
IP_TIMEOUT = 15.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class NetnsError(StackLabError):
    """A netns could not be created, entered or removed."""


def path_of(name: str) -> Path:
    if not _NAME_RE.match(name):
        raise NetnsError(f"{name!r} is not a valid network namespace name")
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path_of(name).exists()


def inode_of(name: str) -> int | None:
    """The namespace's inode (what `/proc/<pid>/ns/net` of its processes points at), or None if absent."""
    try:
        return os.stat(path_of(name)).st_ino
    except OSError:
        return None


def create(runner: Runner, name: str) -> int:
    """`ip netns add NAME` and its loopback up; returns the inode to record. Refuses an existing name."""
    if exists(name):
        raise NetnsError(
            f"network namespace {name} already exists on this host",
            hint="stacklab never adopts a netns it did not record; remove it by hand (`ip netns delete`) if it is "
            "a leftover",
        )
    runner.run(["ip", "netns", "add", name], timeout=IP_TIMEOUT)
    inode = inode_of(name)
    if inode is None:
        raise NetnsError(f"network namespace {name} vanished right after it was created")
    try:
        runner.run(["ip", "-n", name, "link", "set", "lo", "up"], timeout=IP_TIMEOUT)
    except BaseException:
        runner.run(["ip", "netns", "delete", name], timeout=IP_TIMEOUT, check=False)
        raise
    return inode


def delete(runner: Runner, name: str, inode: int) -> bool:
    """Remove the netns if its name still points at `inode`; False if it is already gone."""
    now = inode_of(name)
    if now is None:
        return False
    if now != inode:
        raise NetnsError(
            f"network namespace {name} is not the one this lab created (inode {now}, recorded {inode}): "
            "not deleting it",
            hint="remove it by hand if it is a leftover",
        )
    runner.run(["ip", "netns", "delete", name], timeout=IP_TIMEOUT)
    return True


def pids_in(inode: int, proc: Path = Path("/proc")) -> list[int]:
    """Processes whose network namespace is the one with this inode (they keep it alive after `delete`)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(entry / "ns" / "net").st_ino == inode:
                found.append(int(entry.name))
    return found


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(errno)}", hint="entering a netns needs root (CAP_SYS_ADMIN)")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the calling thread (and what it starts) inside the netns; back in the previous one afterwards."""
    target = path_of(name)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            fd = os.open(target, os.O_RDONLY)
        except OSError as exc:
            raise NetnsError(f"network namespace {name} does not exist ({exc.strerror})") from None
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def enter_for_good(name: str) -> None:
    """Move the calling thread into the netns for the rest of the process (before an exec: `stacklab ssh`)."""
    fd = os.open(path_of(name), os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)
