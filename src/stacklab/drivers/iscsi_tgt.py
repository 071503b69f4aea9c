"""tgt (user-space tgtd, driven by tgtadm): the iSCSI target backend that runs everywhere, LXC nodes included.

Verified on the CI host type (shared/host-notes/storage.md section 2b, containers.md 2.2): tgtd serves file-,
loop-, LV- and RBD-backed (tgt-rbd) LUNs with CHAP and ACLs inside an LXC node under systemd.

On the node:
- a systemd drop-in `/etc/systemd/system/tgt.service.d/stacklab.conf` replaces ExecStart with
  `tgtd -f --iscsi portal=<storage IP>:3260`, so tgtd listens on br-storage only (checked after every apply with
  `tgtadm --mode portal --op show`);
- `/etc/tgt/conf.d/stacklab-<lab>.conf` (mode 0600, it holds the CHAP secrets) persists the targets: Debian's
  targets.conf includes conf.d/*.conf and tgt.service runs `tgt-admin -e` at start, so a restart or reboot
  restores them. Its text is `render_tgt_conf()` (pure, golden-tested);
- the live configuration is made with tgtadm (target new, logicalunit new, bind
  initiator-name, account new + bind). CHAP passwords reach tgtadm through `xargs -0` reading stdin, so they
  never appear in an argv that is logged;
- observation parses `tgtadm --lld iscsi --mode target --op show` (`parse_tgt_show()`, golden-tested with a
  sample captured from tgt 1.0.85) and the portal and account lists.

Stopping: tgtd ignores SIGTERM while targets exist; Debian's unit stops it by deleting every target and then
`tgtadm --op delete --mode system`, which is why the lab restarts it with systemctl only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from stacklab.drivers.iscsi import (
    DATA_LUN,
    ISCSI_PORT,
    IscsiPlan,
    TargetPlan,
    TargetSeen,
    TargetsSeen,
)
from stacklab.drivers.node_files import (
    FILE_TIMEOUT,
    enable_and_restart,
    node_path_exists,
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

TGTADM = ("tgtadm", "--lld", "iscsi")
TGTADM_TIMEOUT = 30.0
UNIT = "tgt.service"
TGTD = "/usr/sbin/tgtd"
DROPIN_PATH = "/etc/systemd/system/tgt.service.d/stacklab.conf"
RBD_BACKING_STORE_MODULE = "/usr/lib/tgt/backing-store/bs_rbd.so"


def conf_path(lab: str) -> str:
    return f"/etc/tgt/conf.d/stacklab-{lab}.conf"


# --- pure rendering -----------------------------------------------------------------------------------------


# Debian's ExecStop runs `tgt-admin --update ALL -c /dev/null -f`, which mistakes initiator-name ACLs for address
# ACLs, fails ("this access control rule does not exist") and leaves the targets; tgtd then ignores SIGTERM and
# systemd waits 90 s before SIGKILL (seen on the CI host with a connected initiator). Delete every target by tid
# with --force (connected sessions included), then the system, so a restart takes about a second.
#
# tgt-admin -e also binds `-I ALL` to every target whose config has no initiator-address, and tgt admits an
# initiator whose address OR IQN is in the ACL: the restored targets would admit any IQN. The start sequence
# therefore unbinds ALL again before the daemon leaves the offline state (no login is accepted while offline).
_EACH_TID = "for tid in $$(tgtadm --lld iscsi --mode target --op show | grep '^Target ' | cut -d: -f1 | cut -d' ' -f2)"
# `$$` is a literal `$` for systemd; no backslashes (systemd would unescape them)
_STOP_TARGETS = f"{_EACH_TID}; do tgtadm --lld iscsi --mode target --op delete --force --tid $$tid; done"
_UNBIND_ALL = f"{_EACH_TID}; do tgtadm --lld iscsi --mode target --op unbind --tid $$tid -I ALL || true; done"


def render_dropin(plan: IscsiPlan) -> str:
    """Pure: the tgt.service drop-in: tgtd on the storage address only, IQN-only ACLs after a restart, and a
    stop that cannot hang."""
    return (
        f"# stacklab lab={plan.lab}: tgtd listens on the br-storage address only; stop deletes targets by tid\n"
        "[Service]\n"
        "ExecStart=\n"
        f"ExecStart={TGTD} -f --iscsi portal={plan.portal_ip}:{ISCSI_PORT}\n"
        "ExecStartPost=\n"
        "ExecStartPost=/usr/sbin/tgtadm --op update --mode sys --name State -v offline\n"
        "ExecStartPost=/usr/sbin/tgt-admin -e -c /etc/tgt/targets.conf\n"
        f'ExecStartPost=/bin/sh -c "{_UNBIND_ALL}"\n'
        "ExecStartPost=/usr/sbin/tgtadm --op update --mode sys --name State -v ready\n"
        "ExecStop=\n"
        "ExecStop=/usr/sbin/tgtadm --op update --mode sys --name State -v offline\n"
        f'ExecStop=/bin/sh -c "{_STOP_TARGETS}"\n'
        "ExecStop=/usr/sbin/tgtadm --op delete --mode system\n"
        "TimeoutStopSec=30\n"
    )


def render_tgt_conf(plan: IscsiPlan, secrets: Mapping[str, str]) -> str:
    """Pure: the lab's targets in tgt-admin's targets.conf syntax (loaded by `tgt-admin -e` at tgt start)."""
    lines = [
        f"# stacklab lab={plan.lab}: iSCSI targets restored by tgt-admin at tgt start.",
        "# Generated; do not edit. Holds CHAP secrets (mode 0600).",
    ]
    for target in plan.targets:
        lines += ["", f"<target {target.iqn}>"]
        if target.backing == "rbd":
            # Target level, not inside <backing-store>: tgt-admin reads bs-type there to skip its file check.
            lines.append("    bs-type rbd")
        lines += [f"    <backing-store {target.path}>", f"        lun {DATA_LUN}", "    </backing-store>"]
        lines += [f"    initiator-name {iqn}" for iqn in target.initiators]
        if target.chap_user and target.chap_secret:
            lines.append(f"    incominguser {target.chap_user} {secrets.get(target.chap_secret, '')}")
        lines.append("</target>")
    return "\n".join(lines) + "\n"


def live_commands(plan: IscsiPlan, target: TargetPlan, tid: int) -> list[tuple[str, ...]]:
    """Pure: the tgtadm argv that make `target` live as `tid` (the CHAP account is added separately)."""
    tgtadm = list(TGTADM)
    bind = [*tgtadm, "--mode", "target", "--op", "bind", "--tid", str(tid)]
    lu = [*tgtadm, "--mode", "logicalunit", "--op", "new", "--tid", str(tid), "--lun", str(DATA_LUN)]
    if target.backing == "rbd":
        lu += ["--bstype", "rbd"]
    lu += ["--backing-store", target.path]
    cmds: list[list[str]] = [
        [*tgtadm, "--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", target.iqn],
        lu,
    ]
    cmds += [[*bind, "--initiator-name", iqn] for iqn in target.initiators]
    return [tuple(c) for c in cmds]


# --- pure parsing -------------------------------------------------------------------------------------------


@dataclass
class TgtTarget:
    tid: int
    iqn: str
    luns: dict[int, dict[str, str]] = field(default_factory=dict)  # lun -> {type, path, bstype}
    accounts: list[str] = field(default_factory=list)
    acls: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "tid": self.tid,
            "iqn": self.iqn,
            "luns": {str(k): v for k, v in sorted(self.luns.items())},
            "accounts": self.accounts,
            "acls": self.acls,
        }


_TARGET_RE = re.compile(r"^Target (\d+): (\S+)$")
_LUN_RE = re.compile(r"^LUN: (\d+)$")
_PORTAL_RE = re.compile(r"^Portal: (\S+):(\d+),\d+$")


def parse_tgt_show(text: str) -> dict[str, TgtTarget]:
    """Pure: `tgtadm --lld iscsi --mode target --op show` -> targets by IQN.

    Sections are told apart by their headers (indentation is 4 spaces per level in tgt 1.0.x); ACL entries that
    start with `iqn.` are initiator names, the others initiator addresses.
    """
    targets: dict[str, TgtTarget] = {}
    current: TgtTarget | None = None
    section = ""
    lun: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _TARGET_RE.match(raw)
        if match:
            current = TgtTarget(int(match.group(1)), match.group(2))
            targets[current.iqn] = current
            section, lun = "", None
            continue
        if current is None:
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        if indent == 4 and line.endswith(":"):
            section, lun = line[:-1], None
            continue
        if section == "LUN information":
            lun_match = _LUN_RE.match(line)
            if lun_match:
                lun = int(lun_match.group(1))
                current.luns[lun] = {}
                continue
            if lun is not None and ":" in line:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "Type":
                    current.luns[lun]["type"] = value
                elif key == "Backing store path":
                    current.luns[lun]["path"] = value
                elif key == "Backing store type":
                    current.luns[lun]["bstype"] = value
        elif section == "Account information":
            current.accounts.append(line.split()[0])
        elif section == "ACL information":
            current.acls.append(line)
    return targets


def parse_tgt_portals(text: str) -> list[str]:
    """Pure: `tgtadm --lld iscsi --mode portal --op show` -> ["IP:PORT", ...]."""
    out = []
    for line in text.splitlines():
        match = _PORTAL_RE.match(line.strip())
        if match:
            out.append(f"{match.group(1)}:{match.group(2)}")
    return out


def parse_tgt_accounts(text: str) -> list[str]:
    """Pure: `tgtadm --lld iscsi --mode account --op show` -> user names."""
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and line != "Account list:"]


def seen_of(target: TgtTarget) -> TargetSeen:
    """Pure: backend-neutral view of one parsed tgt target (LUN 0 is tgt's controller and is left out)."""
    luns = {n: lu.get("path", "") for n, lu in target.luns.items() if lu.get("type") != "controller"}
    return TargetSeen(
        iqn=target.iqn,
        luns=luns,
        initiators=tuple(a for a in target.acls if a.startswith("iqn.")),
        addresses=tuple(a for a in target.acls if not a.startswith("iqn.")),
        chap_users=tuple(target.accounts),
    )


# --- the backend --------------------------------------------------------------------------------------------


class TgtBackend:
    """IscsiTargetBackend on tgtd (see the module docstring)."""

    implementation = "tgt"

    @staticmethod
    def _tgtadm(runner: Runner, *args: str, check: bool = True, input: str | None = None) -> str:
        result = runner.run([*TGTADM, *args], timeout=TGTADM_TIMEOUT, check=check, input=input)
        return result.stdout

    def _show(self, runner: Runner) -> dict[str, TgtTarget]:
        return parse_tgt_show(self._tgtadm(runner, "--mode", "target", "--op", "show"))

    def check_node(self, runner: Runner, plan: IscsiPlan, resource_id: str) -> None:
        files = {TGTD: "the `tgt` package (images/storage.yml)"}
        if any(t.backing == "rbd" for t in plan.targets):
            files[RBD_BACKING_STORE_MODULE] = "the `tgt-rbd` package (tgt's rbd backing store)"
        require_node(runner, plan.node, resource_id, files=files, unit=UNIT)

    def prepare(self, runner: Runner, plan: IscsiPlan, secrets: Mapping[str, str]) -> None:
        write_node_file(runner, conf_path(plan.lab), render_tgt_conf(plan, secrets), mode="0600")
        dropin_changed = write_unit_files(runner, {DROPIN_PATH: render_dropin(plan)})
        # A (re)start runs tgt-admin -e with the config just written, so the targets come back.
        enable_and_restart(runner, UNIT, changed=dropin_changed)

    def ensure_target(self, runner: Runner, plan: IscsiPlan, target: TargetPlan, secrets: Mapping[str, str]) -> None:
        live = self._show(runner)
        if target.iqn in live:
            self.remove_target(runner, plan, target.iqn)
            live = self._show(runner)
        tid = max((t.tid for t in live.values()), default=0) + 1
        for argv in live_commands(plan, target, tid):
            runner.run(argv, timeout=TGTADM_TIMEOUT)
        if target.chap_user and target.chap_secret:
            accounts = parse_tgt_accounts(self._tgtadm(runner, "--mode", "account", "--op", "show"))
            if target.chap_user in accounts:
                self._tgtadm(runner, "--mode", "account", "--op", "delete", "--user", target.chap_user)
            # The secret goes through stdin: xargs appends it as the value of --password.
            runner.run(
                ["xargs", "-0", *TGTADM, "--mode", "account", "--op", "new", "--user", target.chap_user, "--password"],
                timeout=TGTADM_TIMEOUT,
                input=secrets[target.chap_secret],
            )
            self._tgtadm(runner, "--mode", "account", "--op", "bind", "--tid", str(tid), "--user", target.chap_user)

    def remove_target(self, runner: Runner, plan: IscsiPlan, iqn: str) -> None:
        live = self._show(runner)
        found = live.get(iqn)
        if found is None:
            return
        self._tgtadm(runner, "--mode", "target", "--op", "delete", "--force", "--tid", str(found.tid))
        for user in found.accounts:
            if user.startswith(f"{plan.lab}-"):
                self._tgtadm(runner, "--mode", "account", "--op", "delete", "--user", user, check=False)

    def finish(self, runner: Runner, plan: IscsiPlan) -> None:
        portals = parse_tgt_portals(self._tgtadm(runner, "--mode", "portal", "--op", "show"))
        if portals != [plan.portal]:
            raise StackLabError(
                f"tgtd listens on {portals}, expected only {plan.portal}",
                resource=f"iscsi/{plan.node}",
                hint=f"check {DROPIN_PATH} on the node and `systemctl status tgt`",
            )

    def observe(self, runner: Runner, plan: IscsiPlan, secrets: Mapping[str, str]) -> TargetsSeen | None:
        conf = read_node_file(runner, conf_path(plan.lab))
        if not unit_active(runner, UNIT):
            if conf is None:
                return None
            return TargetsSeen({}, (), (f"{UNIT} is not running",))
        problems: list[str] = []
        if conf is None:
            problems.append(f"{conf_path(plan.lab)} missing (targets would not survive a restart)")
        elif conf != render_tgt_conf(plan, secrets):
            problems.append(f"{conf_path(plan.lab)} differs from the lab file")
        if read_node_file(runner, DROPIN_PATH) != render_dropin(plan):
            problems.append(f"{DROPIN_PATH} differs (portal binding)")
        result = runner.run([*TGTADM, "--mode", "target", "--op", "show"], timeout=TGTADM_TIMEOUT, check=False)
        if not result.ok:
            return TargetsSeen({}, (), (*problems, f"tgtadm cannot reach tgtd: {result.stderr.strip()}"))
        owned = {iqn: seen_of(t) for iqn, t in parse_tgt_show(result.stdout).items() if plan.owns(iqn)}
        if not owned and conf is None:
            return None
        portals = parse_tgt_portals(self._tgtadm(runner, "--mode", "portal", "--op", "show", check=False))
        return TargetsSeen(owned, tuple(portals), tuple(problems))

    def delete(self, runner: Runner, plan: IscsiPlan) -> None:
        if unit_active(runner, UNIT):
            result = runner.run([*TGTADM, "--mode", "target", "--op", "show"], timeout=TGTADM_TIMEOUT, check=False)
            for iqn in sorted(parse_tgt_show(result.stdout) if result.ok else {}):
                if plan.owns(iqn):
                    self.remove_target(runner, plan, iqn)
        runner.run(["rm", "-f", conf_path(plan.lab)], timeout=FILE_TIMEOUT)
        if node_path_exists(runner, DROPIN_PATH):
            runner.run(["rm", "-f", DROPIN_PATH], timeout=FILE_TIMEOUT)
            systemctl(runner, "daemon-reload", check=False)
            systemctl(runner, "try-restart", UNIT, check=False)
