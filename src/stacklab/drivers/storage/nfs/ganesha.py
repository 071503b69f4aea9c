"""NFS-Ganesha 4.x with FSAL VFS: the user-space NFS server backend, runs in LXC nodes and VMs alike.

Verified on the CI host type (shared/host-notes/storage.md section 3b): up in 0.3 s, exports reload on SIGHUP,
NFSv3 needs rpcbind (ganesha exits at start without it), NFSv4-only needs none. In a node with systemd the
Debian units handle this: `rpcbind` is enabled and started whenever v3 is on, then `nfs-ganesha`.

Listeners (issue 11: the aio lab had ganesha on 0.0.0.0:2049/20048, rpcbind on *:111, rpc.statd on random
ports). Measured with the storage image's ganesha 4.3 in a network namespace and in a lab node: with an IPv4
`Bind_addr` it opens AF_INET6 sockets and binds them to the IPv4-mapped address (`[::ffff:<storage IP>]:2049`),
i.e. the storage address only. Its IPv4-only fallback (taken when AF_INET6 sockets fail, e.g. under the former
`RestrictAddressFamilies=~AF_INET6` drop-in) binds INADDR_ANY whatever `Bind_addr` says: that drop-in was what
put ganesha on 0.0.0.0. So the service keeps IPv6 sockets, starts after network-online (the address must exist
when `Bind_addr` is resolved), and `ensure` fails if `ss` shows 2049 or 20048 on any other address. rpcbind (v3)
listens through `rpcbind.socket`, whose drop-in (`render_rpcbind_dropin()`) replaces 0.0.0.0/[::] with the
storage address, loopback (v4 and v6: rpcbind opens [::]:111 itself for a family it got no socket for) and its
unix socket (FreeBind: the socket may be set up before the address at boot). NLM is off, so ganesha needs no
rpc.statd: `nfs-ganesha-lock.service` (Debian's statd for ganesha, on random ports on every address) is masked
while the lab owns the node.

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

from stacklab.drivers.storage.nfs.types import MOUNT_PORT, NfsLayout, NfsSeen, make_dirs
from stacklab.errors import StackLabError
from stacklab.exec.node_files import (
    read_node_file,
    require_node,
    systemctl,
    unit_active,
    write_node_file,
    write_unit_files,
)
from stacklab.exec.runner import Runner

LOG = logging.getLogger(__name__)

CONF_PATH = "/etc/ganesha/ganesha.conf"
GANESHA = "/usr/bin/ganesha.nfsd"
UNIT = "nfs-ganesha.service"
RPCBIND = "rpcbind.service"
DROPIN_PATH = "/etc/systemd/system/nfs-ganesha.service.d/stacklab.conf"
RPCBIND_SOCKET = "rpcbind.socket"
RPCBIND_DROPIN_PATH = "/etc/systemd/system/rpcbind.socket.d/stacklab.conf"
RPCBIND_PORT = 111
# Debian's rpc.statd for ganesha (Wanted by nfs-ganesha.service): useless with Enable_NLM = false.
STATD_UNIT = "nfs-ganesha-lock.service"
NFS_PORT = 2049
# A path written into a quoted ganesha.conf string: plain absolute path parts only (no quote, '\\', newline or
# '..' could then end the string, add a block or climb out). The lab file is checked at load time as well.
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)+")


def _conf_path(path: str) -> str:
    if not _PLAIN_PATH.fullmatch(path) or ".." in path:
        raise StackLabError(f"export path {path!r} is not a plain absolute path; not writing it into {CONF_PATH}")
    return f'"{path}"'


def render_dropin(plan: NfsLayout) -> str:
    """Pure: the nfs-ganesha.service drop-in: start once the storage address exists, so `Bind_addr` resolves to it.

    No `RestrictAddressFamilies=~AF_INET6`: ganesha 4.3's IPv4-only fallback binds INADDR_ANY (module docstring).
    """
    return (
        f"{plan.marker}: NFS-Ganesha binds the storage address only; start it once the network is up\n"
        "[Unit]\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
    )


def render_rpcbind_dropin(plan: NfsLayout) -> str:
    """Pure: the rpcbind.socket drop-in: rpcbind on the storage address, loopback and its unix socket only."""
    lines = [
        f"{plan.marker}: rpcbind on the storage address and loopback only (generated; do not edit)",
        "[Socket]",
        "ListenStream=",
        "ListenDatagram=",
        "ListenStream=/run/rpcbind.sock",
    ]
    # [::1] too: rpcbind opens its own socket on [::]:111 for any /etc/netconfig family systemd passed none for.
    for address in ("127.0.0.1", "[::1]", plan.address):
        lines += [f"ListenStream={address}:{RPCBIND_PORT}", f"ListenDatagram={address}:{RPCBIND_PORT}"]
    lines.append("FreeBind=yes")
    return "\n".join(lines) + "\n"


def foreign_listeners(ss_output: str, address: str, ports: tuple[int, ...]) -> list[str]:
    """Pure: local addresses in `ss -Hltn` output (State Recv-Q Send-Q Local Peer) listening on one of `ports` but
    not on `address` or its IPv4-mapped form `[::ffff:address]` (how ganesha's IPv6 sockets bind an IPv4
    `Bind_addr`)."""
    allowed = {f"{address}:{port}" for port in ports} | {f"[::ffff:{address}]:{port}" for port in ports}
    found = []
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        local = fields[3]
        port = local.rpartition(":")[2]
        if port.isdigit() and int(port) in ports and local not in allowed:
            found.append(local)
    return found


def _protocols(plan: NfsLayout) -> str:
    return ", ".join(str(v) for v in plan.versions)


def render_ganesha_conf(plan: NfsLayout) -> str:
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

    def check_node(self, runner: Runner, plan: NfsLayout, resource_id: str) -> None:
        package = "`nfs-ganesha` and `nfs-ganesha-vfs` (and `rpcbind` for v3)"
        require_node(runner, plan.node, resource_id, files={GANESHA: package}, unit=UNIT)

    def desired_state(self, plan: NfsLayout) -> Mapping[str, Any]:
        return ganesha_state(render_ganesha_conf(plan))

    def ensure(self, runner: Runner, plan: NfsLayout, resource_id: str) -> None:
        make_dirs(runner, plan)
        restart_ganesha = False
        if 3 in plan.versions:
            # ganesha exits at start with NFSv3 on and no rpcbind to register with.
            if write_unit_files(runner, {RPCBIND_DROPIN_PATH: render_rpcbind_dropin(plan)}):
                # New listen addresses: the socket unit must be restarted with its service stopped, and ganesha
                # then re-registers with the new rpcbind.
                systemctl(runner, "stop", RPCBIND, check=False)
                systemctl(runner, "restart", RPCBIND_SOCKET)
                restart_ganesha = True
            systemctl(runner, "enable", "--now", RPCBIND_SOCKET, RPCBIND)
        if runner.run(["systemctl", "is-enabled", STATD_UNIT], timeout=30.0, check=False).stdout.strip() != "masked":
            systemctl(runner, "mask", "--now", STATD_UNIT)  # no NLM, no statd: nothing listens on random ports
        old = read_node_file(runner, CONF_PATH)
        text = render_ganesha_conf(plan)
        changed = write_node_file(runner, CONF_PATH, text)
        core_changed = old is None or _core_of(old) != _core_of(text)
        if write_unit_files(runner, {DROPIN_PATH: render_dropin(plan)}) or restart_ganesha:
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
        stray = self.stray_listeners(runner, plan)
        if stray:
            raise StackLabError(
                f"NFS listens on {', '.join(stray)} beyond the storage address {plan.address}",
                resource=resource_id,
                hint=f"check `ss -ltn` on {plan.node}, {DROPIN_PATH} and {RPCBIND_DROPIN_PATH}",
            )

    @staticmethod
    def stray_listeners(runner: Runner, plan: NfsLayout) -> list[str]:
        """NFS, MOUNT and rpcbind TCP listeners on any address but the storage address (loopback is fine for
        rpcbind: local tools and ganesha's registration use it)."""
        result = runner.run(["ss", "-Hltn"], timeout=30.0, check=False)
        if not result.ok:
            return []
        ports = (NFS_PORT, MOUNT_PORT) + ((RPCBIND_PORT,) if 3 in plan.versions else ())
        found = foreign_listeners(result.stdout, plan.address, ports)
        return [f for f in found if f not in (f"127.0.0.1:{RPCBIND_PORT}", f"[::1]:{RPCBIND_PORT}")]

    def observe(self, runner: Runner, plan: NfsLayout) -> NfsSeen | None:
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
        if 3 in plan.versions and read_node_file(runner, RPCBIND_DROPIN_PATH) != render_rpcbind_dropin(plan):
            problems.append(f"{RPCBIND_DROPIN_PATH} missing or different (rpcbind address binding)")
        stray = self.stray_listeners(runner, plan) if unit_active(runner, UNIT) else []
        if stray:
            problems.append(f"NFS listens beyond {plan.address}: {', '.join(stray)}")
        return NfsSeen(True, state, tuple(problems))

    def delete(self, runner: Runner, plan: NfsLayout) -> None:
        text = read_node_file(runner, CONF_PATH)
        if text is None or not text.startswith(plan.marker + ":"):
            LOG.info("nfs/%s: no ganesha configuration of lab %s to remove", plan.node, plan.lab)
            return
        systemctl(runner, "disable", "--now", UNIT, check=False)
        runner.run(["rm", "-f", CONF_PATH, DROPIN_PATH, RPCBIND_DROPIN_PATH], timeout=30.0)
        systemctl(runner, "unmask", STATD_UNIT, check=False)
        systemctl(runner, "daemon-reload", check=False)


def _code(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _core_of(text: str) -> Any:
    try:
        return ganesha_state(text)["core"]
    except GaneshaConfigError:
        return None
