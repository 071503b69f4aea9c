"""knfsd (the kernel NFS server, nfs-kernel-server): the NFS backend for nodes with a full kernel.

knfsd needs the nfsd filesystem in the node's kernel. Containers share the host kernel and the CI host has no
nfsd (shared/host-notes/storage.md section 3a: `rpc.nfsd` cannot open /proc/fs/nfsd, `mount -t nfsd` is an
unknown filesystem type), so `check_node` raises PlanError there (`grep -w nfsd /proc/filesystems` on the node)
and this backend is proven by unit and golden tests only. It runs for real in a VM storage node or on a
workstation / bare-metal runner.

Files (both pure renderings, golden-tested, first line = the lab's marker):
- `/etc/exports.d/stacklab-<lab>.exports`: one line per export,
  `/srv/nfs/images 172.29.244.0/24(rw,sync,no_root_squash,no_subtree_check)`, applied with `exportfs -ra`
  (exportfs reads /etc/exports.d/*.exports; the node's own /etc/exports is left alone);
- `/etc/nfs.conf.d/stacklab-<lab>.conf`: `[nfsd] host=<storage address>` and `vers3`/`vers4` from the spec;
  `[mountd] port=20048` pins MOUNT so the node's port filter covers it; a change restarts `nfs-server` (rpcbind
  is enabled when v3 is on).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from stacklab.drivers.storage.nfs.types import (
    LOCKD_PORT,
    MOUNT_PORT,
    STATD_OUTGOING_PORT,
    STATD_PORT,
    NfsLayout,
    NfsSeen,
    make_dirs,
)
from stacklab.errors import PlanError
from stacklab.exec.node_files import (
    FILE_TIMEOUT,
    enable_and_restart,
    read_node_file,
    require_node,
    systemctl,
    unit_active,
    write_node_file,
)
from stacklab.exec.runner import Runner

LOG = logging.getLogger(__name__)

UNIT = "nfs-server.service"
RPCBIND = "rpcbind.service"
RPC_NFSD = "/usr/sbin/rpc.nfsd"
EXPORT_OPTIONS = "rw,sync,no_root_squash,no_subtree_check"
EXPORTFS_TIMEOUT = 60.0
NO_NFSD_HINT = (
    "knfsd needs nfsd in the node's kernel, which a container shares with a host that lacks it. Use "
    "`implementation: ganesha` (user space, runs in containers) or a VM storage node (`kind: vm`)"
)


def exports_path(lab: str) -> str:
    return f"/etc/exports.d/stacklab-{lab}.exports"


def nfs_conf_path(lab: str) -> str:
    return f"/etc/nfs.conf.d/stacklab-{lab}.conf"


# exports(5) splits a line on blanks and starts a new export on a newline: only plain absolute path parts may
# reach it (the lab file is checked at load time as well; this is the last line of defence).
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)+")


def _export_path(path: str) -> str:
    if not _PLAIN_PATH.fullmatch(path) or ".." in path:
        raise PlanError(f"export path {path!r} is not a plain absolute path; not writing it into an exports file")
    return path


def render_exports(plan: NfsLayout) -> str:
    """Pure: the lab's exports(5) file."""
    lines = [f"{plan.marker}: kernel NFS exports (generated; do not edit)"]
    for export in plan.exports:
        lines.append(f"# export {export.name}")
        lines.append(f"{_export_path(export.path)} {plan.clients}({EXPORT_OPTIONS})")
    return "\n".join(lines) + "\n"


def render_nfs_conf(plan: NfsLayout) -> str:
    """Pure: nfs.conf(5) drop-in binding nfsd to the storage address with the lab's versions."""
    yes = {v: "y" if v in plan.versions else "n" for v in (3, 4)}
    return (
        f"{plan.marker}: kernel NFS server settings (generated; do not edit)\n"
        "[nfsd]\n"
        f"host={plan.address}\n"
        f"vers3={yes[3]}\n"
        f"vers4={yes[4]}\n"
        "[mountd]\n"
        f"port={MOUNT_PORT}\n"
        # NFSv3 locking: fixed ports, so the storage-network filter (nfs.FILTER_PORTS) covers them.
        "[statd]\n"
        f"port={STATD_PORT}\n"
        f"outgoing-port={STATD_OUTGOING_PORT}\n"
        "[lockd]\n"
        f"port={LOCKD_PORT}\n"
        f"udp-port={LOCKD_PORT}\n"
    )


def parse_exports(text: str) -> dict[str, dict[str, list[str]]]:
    """Pure: exports(5) text -> {path: {client: [options]}} (comments and blank lines dropped)."""
    out: dict[str, dict[str, list[str]]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith('"'):
            path, _, rest = line[1:].partition('"')
        else:
            path, _, rest = line.partition(" ")
        clients: dict[str, list[str]] = {}
        for item in rest.split():
            host, _, opts = item.partition("(")
            clients[host] = sorted(o for o in opts.rstrip(")").split(",") if o)
        out[path] = clients
    return out


def parse_nfs_conf(text: str) -> dict[str, str]:
    """Pure: the [nfsd] section of an nfs.conf(5) file as key -> value."""
    section = ""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
        elif "=" in line and section == "nfsd":
            key, _, value = line.partition("=")
            out[key.strip().lower()] = value.strip()
    return out


def knfsd_state(exports_text: str, conf_text: str) -> dict[str, Any]:
    """Pure: the normalized state of the two files."""
    conf = parse_nfs_conf(conf_text)
    versions = [v for v in (3, 4) if conf.get(f"vers{v}", "y").lower() in ("y", "yes", "1", "true", "on")]
    return {"address": conf.get("host", ""), "versions": versions, "exports": parse_exports(exports_text)}


def _has_nfsd(runner: Runner) -> bool:
    return runner.run(["grep", "-qw", "nfsd", "/proc/filesystems"], timeout=FILE_TIMEOUT, check=False).ok


class KnfsdBackend:
    """NfsServerBackend on the kernel NFS server (see the module docstring)."""

    implementation = "knfsd"

    def check_node(self, runner: Runner, plan: NfsLayout, resource_id: str) -> None:
        # nfsd is a module in Debian's cloud kernel (VM nodes): it appears in /proc/filesystems once loaded.
        if not _has_nfsd(runner):
            runner.run(["modprobe", "nfsd"], timeout=FILE_TIMEOUT, check=False)
            if not _has_nfsd(runner):
                raise PlanError(f"{plan.node}'s kernel has no nfsd", resource=resource_id, hint=NO_NFSD_HINT)
        require_node(runner, plan.node, resource_id, files={RPC_NFSD: "`nfs-kernel-server`"}, unit=UNIT)

    def desired_state(self, plan: NfsLayout) -> Mapping[str, Any]:
        return knfsd_state(render_exports(plan), render_nfs_conf(plan))

    def ensure(self, runner: Runner, plan: NfsLayout, resource_id: str) -> None:
        make_dirs(runner, plan)
        if 3 in plan.versions:
            systemctl(runner, "enable", "--now", RPCBIND)
        conf_changed = write_node_file(runner, nfs_conf_path(plan.lab), render_nfs_conf(plan))
        write_node_file(runner, exports_path(plan.lab), render_exports(plan))
        enable_and_restart(runner, UNIT, changed=conf_changed)
        runner.run(["exportfs", "-ra"], timeout=EXPORTFS_TIMEOUT)

    def observe(self, runner: Runner, plan: NfsLayout) -> NfsSeen | None:
        exports = read_node_file(runner, exports_path(plan.lab))
        conf = read_node_file(runner, nfs_conf_path(plan.lab))
        if exports is None and conf is None:
            return None
        texts = [t for t in (exports, conf) if t is not None]
        if not all(t.startswith(plan.marker + ":") for t in texts):
            return NfsSeen(False, {})
        problems: list[str] = []
        if exports is None or conf is None:
            problems.append("one of the knfsd configuration files is missing")
        if not unit_active(runner, UNIT):
            problems.append(f"{UNIT} is not running")
        if 3 in plan.versions and not unit_active(runner, RPCBIND):
            problems.append(f"{RPCBIND} is not running (NFSv3 needs it)")
        return NfsSeen(True, knfsd_state(exports or "", conf or ""), tuple(problems))

    def delete(self, runner: Runner, plan: NfsLayout) -> None:
        removed = False
        for path in (exports_path(plan.lab), nfs_conf_path(plan.lab)):
            text = read_node_file(runner, path)
            if text is not None and text.startswith(plan.marker + ":"):
                runner.run(["rm", "-f", path], timeout=FILE_TIMEOUT)
                removed = True
        if removed:
            runner.run(["exportfs", "-ra"], timeout=EXPORTFS_TIMEOUT, check=False)
            systemctl(runner, "disable", "--now", UNIT, check=False)
