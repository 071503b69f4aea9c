"""Helpers of the `storage` suite: who is the client, how each data path is addressed, and pattern I/O.

Everything runs on the lab's nodes through stacklab's SSH runner (argv lists with timeouts; secrets travel on
stdin into 0600 files, never in argv). Clients are user space on container nodes (libiscsi through QEMU's
`iscsi://` driver, libnfs through `nfs://` and the libnfs tools, librbd through `rbd:` and python3-rbd), so the
same helpers work on full kernels too; VM nodes add the kernel clients (open-iscsi, `mount -t nfs`) at the end.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from stacklab import secrets
from stacklab.exec.runner import CommandResult, Runner
from stacklab.suites.context import LabContext

IO_TIMEOUT = 120.0
SCRATCH = "/var/tmp/stacklab-suite"
CEPH_CONF = "/etc/ceph/ceph.conf"
RBD_TOOL = f"{SCRATCH}/rbd_tool.py"


def client_nodes(lab: LabContext, storage_node: str) -> list[str]:
    """Nodes that act as storage clients: role `client` first, then compute nodes, then anything else."""
    others = [n for n in sorted(lab.nodes) if n != storage_node and "storage" in lab.nodes[n]["addresses"]]
    ranked = sorted(others, key=lambda n: (0 if "client" in lab.nodes[n]["roles"] else 1, n))
    return ranked


def read_secret(lab: LabContext, name: str) -> str:
    value = secrets.read_secret(lab.state_dir, name)
    if value is None:
        raise FileNotFoundError(f"secret {name} was never stored under {lab.state_dir}")
    return value


def put_private(runner: Runner, path: str, content: str | bytes) -> None:
    """Write a file readable by root only on the node; the content goes through stdin."""
    text = content.decode("latin-1") if isinstance(content, bytes) else content
    runner.run(["install", "-D", "-m", "0600", "/dev/stdin", path], timeout=30.0, input=text)


def sha256_of(runner: Runner, argv: list[str], timeout: float = IO_TIMEOUT) -> str:
    """sha256 of what a command writes to stdout on the node (the data itself never crosses SSH)."""
    script = " ".join(shlex.quote(a) for a in argv) + " | sha256sum"
    out = runner.run(["sh", "-c", script], timeout=timeout).stdout
    return out.split()[0]


@dataclass(frozen=True)
class Pattern:
    """A random payload written at an offset: both sides compare its sha256."""

    offset: int
    data: bytes

    @classmethod
    def random(cls, offset: int, size: int) -> Pattern:
        return cls(offset, os.urandom(size))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blocks(self) -> tuple[int, int]:
        """(skip, count) in 4 KiB blocks for dd-style readers."""
        assert self.offset % 4096 == 0 and len(self.data) % 4096 == 0
        return self.offset // 4096, len(self.data) // 4096


def upload_pattern(runner: Runner, pattern: Pattern, name: str) -> str:
    """Put the payload on the node (base64 on stdin, decoded there) and return its path."""
    path = f"{SCRATCH}/{name}.bin"
    runner.run(["install", "-d", "-m", "0700", SCRATCH], timeout=30.0)
    script = f"base64 -d > {shlex.quote(path)}"
    runner.run(["sh", "-c", script], timeout=60.0, input=base64.b64encode(pattern.data).decode())
    return path


def window_opts(protocol_opts: str, offset: int, size: int) -> str:
    """A raw format node over a byte window of a protocol node (`qemu-img dd` cannot skip on iscsi/rbd/nfs)."""
    nested = ",".join(f"file.{item}" for item in protocol_opts.split(","))
    return f"driver=raw,offset={offset},size={size},{nested}"


def read_range_sha(runner: Runner, protocol_opts: str, pattern: Pattern, objects: tuple[str, ...] = ()) -> str:
    """sha256 of the pattern's byte range read back through a QEMU block driver."""
    out = f"{SCRATCH}/readback.raw"
    runner.run(["install", "-d", "-m", "0700", SCRATCH], timeout=30.0)
    runner.run(["rm", "-f", out], timeout=30.0)
    source = window_opts(protocol_opts, pattern.offset, len(pattern.data))
    runner.run(["qemu-img", "convert", *objects, "--image-opts", source, "-O", "raw", out], timeout=IO_TIMEOUT)
    return sha256_of(runner, ["cat", out])


def file_range_sha(runner: Runner, path: str, pattern: Pattern) -> str:
    """sha256 of the pattern's byte range in a plain file or block device on the node (the backing store)."""
    skip, count = pattern.blocks
    return sha256_of(runner, ["dd", f"if={path}", "bs=4096", f"skip={skip}", f"count={count}", "status=none"])


def qemu_io(
    runner: Runner,
    image_opts: str,
    *commands: str,
    objects: tuple[str, ...] = (),
    check: bool = True,
    timeout: float = IO_TIMEOUT,
) -> CommandResult:
    argv = ["qemu-io", *objects, "--image-opts", image_opts]
    for command in commands:
        argv += ["-c", command]
    return runner.run(argv, timeout=timeout, check=check)


def iface_bytes(runner: Runner, device: str) -> int:
    """rx+tx bytes of a node interface (to prove which network carried the traffic)."""
    base = f"/sys/class/net/{device}/statistics"
    out = runner.run(["cat", f"{base}/rx_bytes", f"{base}/tx_bytes"], timeout=30.0).stdout.split()
    return sum(int(v) for v in out)


def nic_device(lab: LabContext, node: str, network: str) -> str:
    for nic in lab.nodes[node]["nics"]:
        if nic["network"] == network:
            return str(nic["device"])
    raise KeyError(f"{node} has no NIC on {network}")


@contextmanager
def outside_source(
    client: Runner,
    server: Runner,
    *,
    lab: LabContext,
    client_node: str,
    server_node: str,
    server_ip: str,
    outside_ip: str,
) -> Iterator[None]:
    """Make the client reach `server_ip` from `outside_ip` (an address outside the storage CIDR) on the same wire.

    Both routes are host routes added for the test and removed afterwards, even when the test fails.
    """
    c_dev = nic_device(lab, client_node, "storage")
    s_dev = nic_device(lab, server_node, "storage")
    client.run(["ip", "addr", "add", f"{outside_ip}/32", "dev", c_dev], timeout=30.0)
    try:
        client.run(["ip", "route", "replace", f"{server_ip}/32", "dev", c_dev, "src", outside_ip], timeout=30.0)
        server.run(["ip", "route", "replace", f"{outside_ip}/32", "dev", s_dev], timeout=30.0)
        yield
    finally:
        server.run(["ip", "route", "del", f"{outside_ip}/32", "dev", s_dev], timeout=30.0, check=False)
        client.run(["ip", "route", "del", f"{server_ip}/32", "dev", c_dev], timeout=30.0, check=False)
        client.run(["ip", "addr", "del", f"{outside_ip}/32", "dev", c_dev], timeout=30.0, check=False)


def tcp_connects(runner: Runner, ip: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(({ip!r}, {port}), 5).close()"
    return runner.run(["python3", "-c", code], timeout=30.0, check=False).ok


def outputs(lab: LabContext, kind: str) -> tuple[str, Mapping[str, Any]] | None:
    """(name, outputs) of the lab's first resource of a kind, or None when the lab has none."""
    for rid, out in sorted(lab.outputs.items()):
        k, _, name = rid.partition("/")
        if k == kind and out:
            return name, out
    return None


def rbd_tool(runner: Runner, user: str, pool: str, image: str, *args: str, timeout: float = 120.0) -> str:
    argv = ["python3", RBD_TOOL, CEPH_CONF, user, pool, image, *args]
    return runner.run(argv, timeout=timeout).stdout


def traffic(lab: LabContext, runner: Runner, node: str) -> dict[str, int]:
    return {net: iface_bytes(runner, nic_device(lab, node, net)) for net in lab.nodes[node]["addresses"]}


def assert_carried_by_storage(
    before: Mapping[str, int], after: Mapping[str, int], payload: int, what: str
) -> dict[str, int]:
    """The storage NIC moved at least the payload and the management NIC far less; returns the byte deltas."""
    delta = {net: after[net] - before[net] for net in before}
    assert delta["storage"] >= payload, f"{what}: expected >= {payload} bytes on br-storage, saw {delta}"
    if "mgmt" in delta:
        assert delta["mgmt"] < payload // 4, f"{what}: the payload crossed br-mgmt too: {delta}"
    return delta


# iSCSI login status (RFC 7143 10.13.5) as libiscsi reports a refused login through QEMU:
# "Failed to log in to target. Status: Authentication failure(513)".
LOGIN_AUTHENTICATION_FAILURE = 0x0201  # CHAP: wrong or missing secret, unknown user
LOGIN_AUTHORIZATION_FAILURE = 0x0202  # the initiator is not allowed (LIO's ACL)
LOGIN_TARGET_NOT_FOUND = 0x0203  # tgt hides a target from initiators outside its ACL
CHAP_REFUSALS = frozenset({LOGIN_AUTHENTICATION_FAILURE})
ACL_REFUSALS = frozenset({LOGIN_AUTHORIZATION_FAILURE, LOGIN_TARGET_NOT_FOUND})
_LOGIN_STATUS = re.compile(r"Failed to log in to target\. Status: (?P<text>[^(\n]*)\((?P<code>\d+)\)")


def iscsi_login_status(stderr: str) -> tuple[int, str] | None:
    """(status code, text) of a login the target refused, from qemu's stderr; None when no login was refused
    (it succeeded, or the failure was something else: no listener, a wrong portal, a timeout)."""
    found = _LOGIN_STATUS.search(stderr)
    return (int(found["code"]), found["text"].strip()) if found else None


def assert_login_refused(result: CommandResult, expected: frozenset[int], why: str) -> str:
    """The target refused the login with one of the `expected` statuses, nothing else; returns the status."""
    assert not result.ok, f"the login with {why} was accepted: {result.stdout.strip()}"
    status = iscsi_login_status(result.stderr)
    assert status is not None, f"the login with {why} failed, but not as a refused login: {result.stderr.strip()}"
    code, text = status
    want = ", ".join(f"{c:#06x}" for c in sorted(expected))
    assert code in expected, f"the login with {why} was refused as {text} ({code:#06x}), expected {want}"
    return f"{text} ({code:#06x})"


def remove_copies(runner: Runner, patterns: tuple[str, ...]) -> list[str]:
    """Remove the files the suite copied into SCRATCH on a node (shell patterns of names, matched there);
    returns what is still left that matches, which should be nothing."""
    names = " -o ".join(f"-name {shlex.quote(p)}" for p in patterns)
    find = f"find {SCRATCH} -maxdepth 1 -type f \\( {names} \\)"
    script = f"[ -d {SCRATCH} ] || exit 0; {find} -delete; {find} -print"
    return runner.run(["sh", "-c", script], timeout=30.0).stdout.split()


# --- kernel clients (VM nodes: open-iscsi and the kernel NFS client) ----------------------------------------

ISCSI_IFACE_PREFIX = "stacklab-"  # open-iscsi iface records the suite makes (one per lab), removed afterwards
NFS_MOUNT = f"{SCRATCH}-mnt"


def is_vm(lab: LabContext, node: str) -> bool:
    """A VM node boots its own kernel (Debian's cloud kernel has iscsi_tcp, nfs and nfsd); containers share the
    host's, which on the CI host type has neither."""
    return lab.nodes[node].get("kind") == "vm"


def iscsiadm(runner: Runner, *args: str, check: bool = True, timeout: float = IO_TIMEOUT) -> CommandResult:
    return runner.run(["iscsiadm", *args], timeout=timeout, check=check)


@dataclass(frozen=True)
class KernelSession:
    """One open-iscsi session of the kernel initiator: the SCSI disk it attached and `iscsiadm -m session -P 3`."""

    device: str
    details: str


def node_record(iqn: str, portal: str, iface: str) -> str:
    """Path of open-iscsi's node record for (target, portal, iface) (root-only, written by iscsiadm)."""
    return f"/etc/iscsi/nodes/{iqn}/{portal.replace(':', ',')},1/{iface}"


def kernel_login(
    runner: Runner,
    *,
    iface: str,
    initiator: str,
    iqn: str,
    portal: str,
    chap: tuple[str, str] | None,
    lun: int = 1,
    iface_may_exist: bool = False,
) -> KernelSession:
    """Log the node's kernel initiator in to one target: an iface record carrying the lab's initiator IQN, a
    SendTargets discovery through it, the CHAP account written into the node record through stdin (iscsiadm's
    `-o update -v` would put the secret on argv), the login, and the SCSI disk udev names for the LUN."""
    iscsiadm(runner, "-m", "iface", "-I", iface, "-o", "new", check=not iface_may_exist)
    iscsiadm(runner, "-m", "iface", "-I", iface, "-o", "update", "-n", "iface.initiatorname", "-v", initiator)
    found = iscsiadm(runner, "-m", "discovery", "-t", "sendtargets", "-p", portal, "-I", iface).stdout
    assert iqn in found, f"SendTargets discovery on {portal} did not list {iqn}: {found}"
    if chap is not None:
        user, secret = chap
        lines = f"node.session.auth.authmethod = CHAP\nnode.session.auth.username = {user}\n"
        lines += f"node.session.auth.password = {secret}\n"
        runner.run(["sh", "-c", 'cat >> "$1"', "sh", node_record(iqn, portal, iface)], timeout=30.0, input=lines)
    iscsiadm(runner, "-m", "node", "-T", iqn, "-p", portal, "-I", iface, "--login")
    link = f"/dev/disk/by-path/ip-{portal}-iscsi-{iqn}-lun-{lun}"
    runner.run(["udevadm", "settle", "--timeout=60"], timeout=90.0, check=False)
    device = runner.run(["readlink", "-e", link], timeout=30.0).stdout.strip()
    details = iscsiadm(runner, "-m", "session", "-P", "3").stdout
    return KernelSession(device, details)


def kernel_logout(runner: Runner, *, iface: str, iqn: str, portal: str) -> None:
    """Best effort, for finalizers: log out and forget the node record, the discovery record and the iface."""
    iscsiadm(runner, "-m", "node", "-T", iqn, "-p", portal, "-I", iface, "--logout", check=False)
    iscsiadm(runner, "-m", "node", "-T", iqn, "-p", portal, "-I", iface, "-o", "delete", check=False)
    iscsiadm(runner, "-m", "discoverydb", "-t", "sendtargets", "-p", portal, "-o", "delete", check=False)
    iscsiadm(runner, "-m", "iface", "-I", iface, "-o", "delete", check=False)


def session_block(details: str, iqn: str) -> str:
    """The part of `iscsiadm -m session -P 3` that describes the session to `iqn`."""
    start = details.find(f"Target: {iqn} ")
    if start < 0:
        start = details.find(f"Target: {iqn}\n")
    if start < 0:
        return ""
    end = details.find("Target: ", start + 1)
    return details[start : end if end > 0 else None]


def device_write(runner: Runner, device: str, pattern: Pattern, src: str) -> None:
    """Write the uploaded pattern to a block device or file at its offset, direct I/O, synced before returning."""
    skip, count = pattern.blocks
    argv = ["dd", f"if={src}", f"of={device}", "bs=4096", f"seek={skip}", f"count={count}"]
    runner.run([*argv, "oflag=direct", "conv=fsync,notrunc", "status=none"], timeout=IO_TIMEOUT)
