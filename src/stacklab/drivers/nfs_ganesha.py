"""NFS-Ganesha 4.x with FSAL VFS: the user-space NFS server backend, runs in LXC nodes and VMs alike.

Verified on the CI host type (shared/host-notes/storage.md section 3b): up in 0.3 s, exports reload on SIGHUP,
NFSv3 needs rpcbind (ganesha exits at start without it), NFSv4-only needs none. In a node with systemd the
Debian units handle this: `rpcbind` is enabled and started whenever v3 is on, then `nfs-ganesha`.

A drop-in (`render_dropin()`) sets `RestrictAddressFamilies=~AF_INET6` on nfs-ganesha.service: ganesha 4.3
honours an IPv4 Bind_addr only when it cannot open IPv6 sockets (checked on the CI host), so this is what keeps
it off every address but br-storage; `ensure` logs a warning if `ss` still shows another listener.

`/etc/ganesha/ganesha.conf` is `render_ganesha_conf()` (pure, golden-tested): NFS_CORE_PARAM binds the storage
address with the lab's protocol versions (no NLM, RQUOTA or UDP); EXPORT_DEFAULTS denies everyone; each EXPORT
(FSAL VFS, Pseudo = Path so v3 and v4 clients use one path) grants RW with no_root_squash to the storage CIDR in
its CLIENT block. A changed export list is applied with `systemctl reload nfs-ganesha` (SIGHUP); a changed
NFS_CORE_PARAM / NFSV4 block (address, versions) needs a restart. Observation parses the file back
(`parse_ganesha_conf()`), so unrelated formatting cannot make a second `up` plan changes.

Clients: libnfs and QEMU `nfs://` use NFSv3 (libnfs 4.0's NFSv4 writes of 4 KiB or more fail client-side).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stacklab.drivers.nfs import MOUNT_PORT, NfsPlan, NfsSeen, make_dirs
from stacklab.drivers.node_files import (
    read_node_file,
    require_node,
    systemctl,
    unit_active,
    write_node_file,
    write_unit_files,
)
from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner

LOG = logging.getLogger(__name__)

CONF_PATH = "/etc/ganesha/ganesha.conf"
GANESHA = "/usr/bin/ganesha.nfsd"
UNIT = "nfs-ganesha.service"
RPCBIND = "rpcbind.service"
DROPIN_PATH = "/etc/systemd/system/nfs-ganesha.service.d/stacklab.conf"
NFS_PORT = 2049
# A path written into a quoted ganesha.conf string: plain absolute path parts only (no quote, '\\', newline or
# '..' could then end the string, add a block or climb out). The lab file is checked at load time as well.
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)+")


def _conf_path(path: str) -> str:
    if not _PLAIN_PATH.fullmatch(path) or ".." in path:
        raise StackLabError(f"export path {path!r} is not a plain absolute path; not writing it into {CONF_PATH}")
    return f'"{path}"'


def render_dropin(plan: NfsPlan) -> str:
    """Pure: the nfs-ganesha.service drop-in that makes Bind_addr effective.

    Verified with ganesha 4.3: with an IPv4 Bind_addr it still listens on [::]:2049 whenever it can open IPv6
    sockets (it binds its AF_INET6 sockets to the unset IPv6 part of the address); when AF_INET6 sockets fail
    with EAFNOSUPPORT it falls back to IPv4 and listens on Bind_addr only. systemd's RestrictAddressFamilies
    makes exactly that failure happen for this service.
    """
    return (
        f"{plan.marker}: bind NFS-Ganesha to the storage address only (IPv4 sockets)\n"
        "[Service]\n"
        "RestrictAddressFamilies=~AF_INET6\n"
    )


def _protocols(plan: NfsPlan) -> str:
    return ", ".join(str(v) for v in plan.versions)


def render_ganesha_conf(plan: NfsPlan) -> str:
    """Pure: the whole ganesha.conf of the lab's NFS server."""
    lines = [
        f"{plan.marker}: NFS-Ganesha configuration (generated; do not edit)",
        "",
        "NFS_CORE_PARAM {",
        f"    Bind_addr = {plan.address};",
        f"    Protocols = {_protocols(plan)};",
        f"    MNT_Port = {MOUNT_PORT};",
        "    Enable_NLM = false;",
        "    Enable_RQUOTA = false;",
        "    Enable_UDP = false;",
        "}",
        "",
        "NFSV4 {",
        "    # No grace period after a restart: labs restart often and have no clients to reclaim state.",
        "    Graceless = true;",
        "}",
        "",
        "EXPORT_DEFAULTS {",
        "    Access_Type = None;",
        f"    Protocols = {_protocols(plan)};",
        "}",
    ]
    for export in plan.exports:
        lines += [
            "",
            f"# export {export.name}",
            "EXPORT {",
            f"    Export_Id = {export.export_id};",
            f"    Path = {_conf_path(export.path)};",
            f"    Pseudo = {_conf_path(export.path)};",
            f"    Protocols = {_protocols(plan)};",
            "    Transports = TCP;",
            "    SecType = sys;",
            "    Access_Type = None;",
            "    Squash = No_Root_Squash;",
            "    FSAL {",
            "        Name = VFS;",
            "    }",
            "    CLIENT {",
            f"        Clients = {plan.clients};",
            "        Access_Type = RW;",
            "        Squash = No_Root_Squash;",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


# --- parsing ------------------------------------------------------------------------------------------------


@dataclass
class Block:
    name: str
    params: dict[str, str] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def all(self, name: str) -> list[Block]:
        return [b for b in self.blocks if b.name.upper() == name.upper()]

    def first(self, name: str) -> Block | None:
        found = self.all(name)
        return found[0] if found else None

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.params.items():
            if k.lower() == key.lower():
                return v
        return default


_TOKEN = re.compile(r'"[^"]*"|[{};=]|[^\s{};="]+')


class GaneshaConfigError(StackLabError):
    pass


def parse_ganesha_blocks(text: str) -> Block:
    """Pure: ganesha.conf -> a tree of blocks with `key = value;` params (comments dropped, quotes removed)."""
    tokens: list[str] = []
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        tokens += _TOKEN.findall(code)
    root = Block("")
    stack = [root]
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "}":
            if len(stack) == 1:
                raise GaneshaConfigError("unbalanced '}' in ganesha.conf")
            stack.pop()
            i += 1
        elif i + 1 < len(tokens) and tokens[i + 1] == "{":
            block = Block(tok)
            stack[-1].blocks.append(block)
            stack.append(block)
            i += 2
        elif i + 1 < len(tokens) and tokens[i + 1] == "=":
            j = i + 2
            value: list[str] = []
            while j < len(tokens) and tokens[j] not in (";", "}"):
                value.append(tokens[j].strip('"'))
                j += 1
            stack[-1].params[tok] = " ".join(value)
            i = j + 1 if j < len(tokens) and tokens[j] == ";" else j
        else:
            i += 1
    if len(stack) != 1:
        raise GaneshaConfigError("unclosed block in ganesha.conf")
    return root


def _versions(value: str) -> list[int]:
    return sorted(int(v) for v in re.findall(r"\d+", value))


def ganesha_state(text: str) -> dict[str, Any]:
    """Pure: the normalized state of a ganesha.conf (what the lab cares about, nothing else)."""
    root = parse_ganesha_blocks(text)
    core = root.first("NFS_CORE_PARAM") or Block("NFS_CORE_PARAM")
    v4 = root.first("NFSV4") or Block("NFSV4")
    defaults = root.first("EXPORT_DEFAULTS") or Block("EXPORT_DEFAULTS")
    exports: dict[str, Any] = {}
    for export in root.all("EXPORT"):
        fsal = export.first("FSAL") or Block("FSAL")
        clients = {
            c.get("Clients"): {"access": c.get("Access_Type").lower(), "squash": c.get("Squash").lower()}
            for c in export.all("CLIENT")
        }
        exports[export.get("Path")] = {
            "id": export.get("Export_Id"),
            "pseudo": export.get("Pseudo"),
            "protocols": _versions(export.get("Protocols")),
            "access": export.get("Access_Type", defaults.get("Access_Type")).lower(),
            "fsal": fsal.get("Name").upper(),
            "clients": clients,
        }
    return {
        "core": {
            "bind_addr": core.get("Bind_addr"),
            "protocols": _versions(core.get("Protocols")),
            "graceless": v4.get("Graceless").lower(),
        },
        "default_access": defaults.get("Access_Type").lower(),
        "exports": exports,
    }


# --- the backend --------------------------------------------------------------------------------------------


class GaneshaBackend:
    """NfsServerBackend on NFS-Ganesha (see the module docstring)."""

    implementation = "ganesha"

    def check_node(self, runner: Runner, plan: NfsPlan, resource_id: str) -> None:
        package = "`nfs-ganesha` and `nfs-ganesha-vfs` (and `rpcbind` for v3)"
        require_node(runner, plan.node, resource_id, files={GANESHA: package}, unit=UNIT)

    def desired_state(self, plan: NfsPlan) -> Mapping[str, Any]:
        return ganesha_state(render_ganesha_conf(plan))

    def ensure(self, runner: Runner, plan: NfsPlan, resource_id: str) -> None:
        make_dirs(runner, plan)
        if 3 in plan.versions:
            # ganesha exits at start with NFSv3 on and no rpcbind to register with.
            systemctl(runner, "enable", "--now", RPCBIND)
        old = read_node_file(runner, CONF_PATH)
        text = render_ganesha_conf(plan)
        changed = write_node_file(runner, CONF_PATH, text)
        core_changed = old is None or _core_of(old) != _core_of(text)
        if write_unit_files(runner, {DROPIN_PATH: render_dropin(plan)}):
            core_changed = changed = True
        systemctl(runner, "enable", UNIT)
        if not unit_active(runner, UNIT):
            systemctl(runner, "start", UNIT)
        elif core_changed and changed:
            systemctl(runner, "restart", UNIT)
        elif changed:
            systemctl(runner, "reload", UNIT)  # SIGHUP: ganesha re-reads its exports
        if not unit_active(runner, UNIT):
            raise StackLabError(
                f"{UNIT} is not running on {plan.node} after (re)start",
                resource=resource_id,
                hint="see /var/log/ganesha/ganesha.log on the node (NFSv3 needs rpcbind running)",
            )
        listening = runner.run(["ss", "-Hltn", f"sport = :{NFS_PORT}"], timeout=30.0, check=False)
        if listening.ok and f"{plan.address}:{NFS_PORT}" not in listening.stdout:
            # Seen in LXC nodes on the CI host: ganesha 4.3 binds 0.0.0.0 despite Bind_addr. The exports' CLIENT
            # blocks and the node's port filter (nfs.FILTER) still admit only the storage CIDR.
            LOG.info(
                "%s: nfs-ganesha listens beyond %s:%s (ss: %s); exports and the port filter admit only %s",
                resource_id,
                plan.address,
                NFS_PORT,
                " ".join(listening.stdout.split()),
                plan.clients,
            )

    def observe(self, runner: Runner, plan: NfsPlan) -> NfsSeen | None:
        text = read_node_file(runner, CONF_PATH)
        if text is None:
            return None
        if not text.startswith(plan.marker + ":"):
            # Debian's stock ganesha.conf (no marker) is not a foreign server as long as ganesha is not serving.
            if not unit_active(runner, UNIT) or "EXPORT" not in _code(text):
                return None
            return NfsSeen(False, {})
        try:
            state = ganesha_state(text)
        except GaneshaConfigError as exc:
            return NfsSeen(True, {}, (f"{CONF_PATH} does not parse: {exc}",))
        problems: list[str] = []
        if read_node_file(runner, DROPIN_PATH) != render_dropin(plan):
            problems.append(f"{DROPIN_PATH} missing or different (address binding)")
        if not unit_active(runner, UNIT):
            problems.append(f"{UNIT} is not running")
        if 3 in plan.versions and not unit_active(runner, RPCBIND):
            problems.append(f"{RPCBIND} is not running (NFSv3 needs it)")
        return NfsSeen(True, state, tuple(problems))

    def delete(self, runner: Runner, plan: NfsPlan) -> None:
        text = read_node_file(runner, CONF_PATH)
        if text is None or not text.startswith(plan.marker + ":"):
            LOG.info("nfs/%s: no ganesha configuration of lab %s to remove", plan.node, plan.lab)
            return
        systemctl(runner, "disable", "--now", UNIT, check=False)
        runner.run(["rm", "-f", CONF_PATH, DROPIN_PATH], timeout=30.0)
        systemctl(runner, "daemon-reload", check=False)


def _code(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _core_of(text: str) -> Any:
    try:
        return ganesha_state(text)["core"]
    except GaneshaConfigError:
        return None
