"""Does tmpfs hold user xattrs on this host? Swift keeps object metadata in `user.swift.metadata`, and Linux gave
tmpfs user xattrs only in 6.6: on an older kernel (Debian 12's stock 6.1) a tmpfs Swift device refuses every write.

The probe is real and leaves nothing behind: in a private mount namespace (`unshare --mount --propagation
private`) it mounts a fresh 1 MiB tmpfs over /tmp (seen only inside that namespace, gone with it), creates a file
and sets and reads back user xattrs the size of an object's metadata (a few hundred bytes). When the probe itself
cannot run (not root, no unshare), the kernel version answers instead, and the detail says so.
"""

from __future__ import annotations

import logging
import re
import sys

from stacklab.exec.runner import CommandError, CommandTimeout, Runner
from stacklab.host.features import Capability

LOG = logging.getLogger(__name__)

FIRST_KERNEL = (6, 6)  # tmpfs has user xattrs from Linux 6.6 ("shmem: add support for user extended attributes")
PROBE_TIMEOUT = 30.0
REFUSED = 3  # the script's exit code when tmpfs refused the user xattr (anything else: the probe could not run)
# Runs as the only process of its private mount namespace; /tmp is the mount point because every host has it.
PROBE_SCRIPT = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b"stacklab-xattr-probe", b"/tmp", b"tmpfs", 0, b"size=1m,mode=0700") != 0:
    sys.exit("mounting a tmpfs in the private namespace: " + os.strerror(ctypes.get_errno()))
path = "/tmp/probe"
open(path, "w").close()
value = b"x" * 254  # an object's pickled metadata is a few hundred bytes (user.swift.metadata, then ...1, ...2)
keys = ["user.swift.metadata"] + [f"user.swift.metadata{i}" for i in range(1, 4)]
try:
    for key in keys:
        os.setxattr(path, key, value)
except OSError as exc:
    print(exc.strerror, file=sys.stderr)
    sys.exit(3)
if any(os.getxattr(path, key) != value for key in keys):
    sys.exit("the user xattrs read back differ")
"""


def probe_argv(python: str = sys.executable) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--", python, "-c", PROBE_SCRIPT]


def kernel_version(release: str) -> tuple[int, int] | None:
    """(major, minor) of a kernel release string such as `6.1.0-28-amd64`, or None."""
    found = re.match(r"(\d+)\.(\d+)", release.strip())
    return (int(found.group(1)), int(found.group(2))) if found else None


def by_kernel_version(release: str, why: str) -> Capability:
    """The last resort: judge by the kernel version, saying why the probe did not answer."""
    version = kernel_version(release)
    first = ".".join(map(str, FIRST_KERNEL))
    if version is None:
        return Capability(False, f"unknown kernel release {release.strip()!r} and no probe ({why})")
    if version >= FIRST_KERNEL:
        return Capability(True, f"Linux {release.strip()} >= {first} (by version: {why})")
    return Capability(False, f"Linux {release.strip()} < {first}, tmpfs has no user xattrs (by version: {why})")


def probe_tmpfs_user_xattrs(runner: Runner, release: str, *, python: str = sys.executable) -> Capability:
    """Whether a fresh tmpfs takes Swift's user xattrs, tried for real; by `release` when the try cannot run."""
    try:
        result = runner.run(probe_argv(python), timeout=PROBE_TIMEOUT, check=False)
    except (CommandError, CommandTimeout, OSError) as exc:  # unshare missing, or the probe hung
        return by_kernel_version(release, f"the probe did not run: {exc}")
    LOG.debug("tmpfs xattr probe: rc=%s %s", result.returncode, result.stderr.strip())
    if result.ok:
        return Capability(True, "a fresh tmpfs took and returned Swift-sized user xattrs (private mount namespace)")
    error = (result.stderr.strip().splitlines() or ["no output"])[-1][-200:]
    if result.returncode == REFUSED:
        why = f"{error} (Linux {release.strip()}; tmpfs holds them from 6.6)"
        return Capability(False, f"a fresh tmpfs refused a user xattr: {why}")
    return by_kernel_version(release, f"the probe failed: {error}")
