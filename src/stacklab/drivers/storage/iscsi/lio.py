"""LIO (the kernel's iSCSI target, driven by targetcli-fb): the iSCSI backend for nodes with a full kernel.

LIO lives in configfs (`/sys/kernel/config/target`, modules target_core_mod and iscsi_target_mod). Containers
share the host kernel, and the CI host has neither configfs nor loadable modules (shared/host-notes/storage.md
section 2a: `targetcli ls` fails reading /proc/modules, `mount -t configfs` is an unknown filesystem type). So
`check_node` raises PlanError there, and this backend is proven by unit and golden tests only; it runs for real
on a workstation / bare-metal runner or in a VM storage node.

What it builds, per target (`render_lio_commands()`, pure, golden-tested; each line is one `targetcli` call):
- a backstore named `<lab>-<target>`: `fileio` on the sparse file, or `block` on the LV (`backing: rbd` is a
  PlanError earlier: LIO would need the kernel rbd module to map the image);
- the target `<iqn_prefix>:<target>`, TPG 1 with one portal on the storage address (the default 0.0.0.0:3260
  portal targetcli may add is deleted first), LUN 1 on the backstore;
- ACLs for the client nodes' initiator IQNs, each mapping LUN 1; generate_node_acls=0 (no demo mode) and, with
  CHAP, authentication=1 and userid/password on every ACL. The password never reaches an argv (where any user
  of the node could read it in /proc): a small rtslib-fb program (`CHAP_HELPER`, run by the node's python3) reads
  it from stdin and writes it into the ACL's configfs attribute.
Then `targetcli saveconfig` writes /etc/rtslib-fb-target/saveconfig.json, which Debian's
rtslib-fb-targetctl.service restores at boot; observation parses that file (`parse_saveconfig()`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stacklab.drivers.storage.iscsi.types import DATA_LUN, ISCSI_PORT, IscsiPlan, TargetPlan, TargetSeen, TargetsSeen
from stacklab.errors import PlanError
from stacklab.exec.node_files import FILE_TIMEOUT, node_has_systemd, node_path_exists, read_node_file, systemctl
from stacklab.exec.runner import Runner

LOG = logging.getLogger(__name__)

TARGETCLI = "/usr/bin/targetcli"
TARGETCLI_TIMEOUT = 60.0
SAVECONFIG = "/etc/rtslib-fb-target/saveconfig.json"
RESTORE_UNIT = "rtslib-fb-targetctl.service"
CONFIGFS_TARGET = "/sys/kernel/config/target"
NO_LIO_HINT = (
    "LIO needs configfs and target_core_mod in the node's kernel, which a container shares with a host that "
    "lacks them. Use `implementation: tgt` (user space, runs in containers) or a VM storage node (`kind: vm`)"
)


# Sets one ACL's CHAP account through rtslib-fb (the library targetcli-fb is built on): argv carries the target
# IQN, the initiator IQN and the user name; the secret comes on stdin, exactly (no trailing newline is added).
CHAP_HELPER = """\
import sys
from rtslib_fb import TPG, FabricModule, NodeACL, Target
iqn, initiator, userid = sys.argv[1:4]
secret = sys.stdin.read()
if not secret:
    sys.exit("no CHAP secret on stdin")
tpg = TPG(Target(FabricModule("iscsi"), iqn, mode="lookup"), 1, mode="lookup")
acl = NodeACL(tpg, initiator, mode="lookup")
acl.chap_userid = userid
acl.chap_password = secret
"""
PYTHON = "/usr/bin/python3"  # Debian's, which has python3-rtslib-fb


@dataclass(frozen=True)
class LioCommand:
    """One targetcli call, or (with `secret`) one CHAP_HELPER call whose args are (target IQN, initiator IQN,
    user) and which reads the named secret on stdin. `may_fail` marks clean-up calls whose failure means
    "nothing to clean"."""

    args: tuple[str, ...]
    secret: str | None = None
    may_fail: bool = False

    def argv(self) -> list[str]:
        if self.secret is None:
            return ["targetcli", *self.args]
        return [PYTHON, "-c", CHAP_HELPER, *self.args]

    def display(self) -> str:
        """For golden files and logs: the secret is shown by name only."""
        if self.secret is not None:
            iqn, initiator, user = self.args
            return f"rtslib: {iqn} tpg1 acl {initiator}: chap userid={user} password=<secret:{self.secret}>"
        text = " ".join(["targetcli", *self.args])
        if self.may_fail:
            text += "  # may fail"
        return text


_NO_MAP = "add_mapped_luns=false"


def backstore_name(plan: IscsiPlan, target: str) -> str:
    return f"{plan.lab}-{target}"


def backstore_type(target: TargetPlan) -> str:
    return "block" if target.backing == "lvm" else "fileio"


def render_lio_commands(plan: IscsiPlan, target: TargetPlan) -> list[LioCommand]:
    """Pure: the targetcli calls that build one target from nothing (after its old copy, if any, is removed)."""
    store = backstore_name(plan, target.name)
    kind = backstore_type(target)
    if kind == "block":
        create_store: tuple[str, ...] = ("/backstores/block", "create", f"name={store}", f"dev={target.path}")
    else:
        create_store = (
            "/backstores/fileio",
            "create",
            f"name={store}",
            f"file_or_dev={target.path}",
            f"size={target.size_mib}M",
            "sparse=true",
            "write_back=false",
        )
    tpg = f"/iscsi/{target.iqn}/tpg1"
    auth = "1" if target.chap_user else "0"
    cmds = [
        LioCommand(create_store),
        LioCommand(("/iscsi", "create", f"wwn={target.iqn}")),
        LioCommand((f"{tpg}/portals", "delete", "ip_address=0.0.0.0", f"ip_port={ISCSI_PORT}"), may_fail=True),
        LioCommand((f"{tpg}/portals", "create", f"ip_address={plan.portal_ip}", f"ip_port={ISCSI_PORT}")),
        LioCommand(
            (
                f"{tpg}/luns",
                "create",
                f"storage_object=/backstores/{kind}/{store}",
                f"lun={DATA_LUN}",
                "add_mapped_luns=false",
            )
        ),
        LioCommand(
            (tpg, "set", "attribute", f"authentication={auth}", "generate_node_acls=0", "demo_mode_write_protect=1")
        ),
    ]
    for initiator in target.initiators:
        acl = f"{tpg}/acls/{initiator}"
        cmds.append(LioCommand((f"{tpg}/acls", "create", f"wwn={initiator}", _NO_MAP)))
        cmds.append(
            LioCommand(
                (acl, "create", f"mapped_lun={DATA_LUN}", f"tpg_lun_or_backstore={DATA_LUN}", "write_protect=false")
            )
        )
        if target.chap_user and target.chap_secret:
            cmds.append(LioCommand((target.iqn, initiator, target.chap_user), secret=target.chap_secret))
    return cmds


def removal_commands(plan: IscsiPlan, iqn: str, stores: Mapping[str, str]) -> list[LioCommand]:
    """Pure: delete a target and the lab's backstores it used (`stores`: name -> backstore type)."""
    cmds = [LioCommand(("/iscsi", "delete", f"wwn={iqn}"), may_fail=True)]
    cmds += [
        LioCommand((f"/backstores/{kind}", "delete", f"name={name}"), may_fail=True)
        for name, kind in sorted(stores.items())
        if name.startswith(f"{plan.lab}-")
    ]
    return cmds


def render_lio_script(plan: IscsiPlan) -> str:
    """Pure: every target's commands as text (golden files and `--debug` logs; secrets by name)."""
    lines = [f"# stacklab lab={plan.lab}: LIO targets on {plan.portal}"]
    for target in plan.targets:
        lines.append(f"# target {target.name}")
        lines += [c.display() for c in render_lio_commands(plan, target)]
    lines.append("targetcli saveconfig")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LioTarget:
    seen: TargetSeen
    stores: Mapping[str, str]  # backstore name -> type, used by this target's LUNs


def parse_saveconfig(text: str) -> dict[str, LioTarget]:
    """Pure: targets of an rtslib saveconfig.json by IQN, with LUN paths resolved through the storage objects."""
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        return {}
    objects = {
        f"/backstores/{o.get('plugin')}/{o.get('name')}": (str(o.get("name")), str(o.get("plugin")), str(o.get("dev")))
        for o in data.get("storage_objects", [])
    }
    out: dict[str, LioTarget] = {}
    for target in data.get("targets", []):
        if target.get("fabric") != "iscsi":
            continue
        iqn = str(target.get("wwn"))
        luns: dict[int, str] = {}
        stores: dict[str, str] = {}
        initiators: list[str] = []
        users: list[str] = []
        portals: list[str] = []
        for tpg in target.get("tpgs", []):
            for lun in tpg.get("luns", []):
                name, plugin, dev = objects.get(str(lun.get("storage_object")), ("", "", ""))
                luns[int(lun.get("index", -1))] = dev
                if name:
                    stores[name] = plugin
            portals += [f"{p.get('ip_address')}:{p.get('port')}" for p in tpg.get("portals", [])]
            auth = str(tpg.get("attributes", {}).get("authentication", "0")) == "1"
            for acl in tpg.get("node_acls", []):
                initiators.append(str(acl.get("node_wwn")))
                if auth and acl.get("chap_userid") and acl.get("chap_password"):
                    users.append(str(acl["chap_userid"]))
        seen = TargetSeen(
            iqn=iqn,
            luns=luns,
            initiators=tuple(initiators),
            chap_users=tuple(dict.fromkeys(users)),
            portals=tuple(portals),
        )
        out[iqn] = LioTarget(seen, stores)
    return out


class LioBackend:
    """IscsiTargetBackend on LIO (see the module docstring)."""

    implementation = "lio"

    @staticmethod
    def _run(runner: Runner, cmds: list[LioCommand], secrets: Mapping[str, str]) -> None:
        for cmd in cmds:
            LOG.debug("lio: %s", cmd.display())
            stdin = secrets[cmd.secret] if cmd.secret is not None else None
            runner.run(cmd.argv(), timeout=TARGETCLI_TIMEOUT, check=not cmd.may_fail, input=stdin)

    def check_node(self, runner: Runner, plan: IscsiPlan, resource_id: str) -> None:
        if not runner.run(["grep", "-qw", "configfs", "/proc/filesystems"], timeout=FILE_TIMEOUT, check=False).ok:
            raise PlanError(f"{plan.node}'s kernel has no configfs", resource=resource_id, hint=NO_LIO_HINT)
        if not node_path_exists(runner, CONFIGFS_TARGET):
            loaded = runner.run(["modprobe", "target_core_mod"], timeout=FILE_TIMEOUT, check=False)
            if not loaded.ok or not node_path_exists(runner, CONFIGFS_TARGET):
                raise PlanError(
                    f"{plan.node} has no LIO target core ({CONFIGFS_TARGET} missing, target_core_mod not loadable)",
                    resource=resource_id,
                    hint=NO_LIO_HINT,
                )
        if not node_path_exists(runner, TARGETCLI):
            raise PlanError(
                f"{plan.node} has no {TARGETCLI}",
                resource=resource_id,
                hint="the storage image must include `targetcli-fb`",
            )

    def prepare(self, runner: Runner, plan: IscsiPlan, secrets: Mapping[str, str]) -> None:
        # LIO keeps no daemon; the kernel serves the portals as soon as they exist.
        return None

    def _saved(self, runner: Runner) -> dict[str, LioTarget]:
        text = read_node_file(runner, SAVECONFIG)
        return parse_saveconfig(text) if text is not None else {}

    def ensure_target(self, runner: Runner, plan: IscsiPlan, target: TargetPlan, secrets: Mapping[str, str]) -> None:
        old = self._saved(runner).get(target.iqn)
        stores = dict(old.stores) if old is not None else {}
        stores.setdefault(backstore_name(plan, target.name), backstore_type(target))
        self._run(runner, removal_commands(plan, target.iqn, stores), secrets)
        self._run(runner, render_lio_commands(plan, target), secrets)

    def remove_target(self, runner: Runner, plan: IscsiPlan, iqn: str) -> None:
        old = self._saved(runner).get(iqn)
        self._run(runner, removal_commands(plan, iqn, old.stores if old else {}), {})
        runner.run(["targetcli", "saveconfig"], timeout=TARGETCLI_TIMEOUT)

    def finish(self, runner: Runner, plan: IscsiPlan) -> None:
        runner.run(["targetcli", "saveconfig"], timeout=TARGETCLI_TIMEOUT)
        if node_has_systemd(runner):
            systemctl(runner, "enable", RESTORE_UNIT)

    def observe(self, runner: Runner, plan: IscsiPlan, secrets: Mapping[str, str]) -> TargetsSeen | None:
        text = read_node_file(runner, SAVECONFIG)
        if text is None:
            return None
        owned = {iqn: t.seen for iqn, t in parse_saveconfig(text).items() if plan.owns(iqn)}
        if not owned:
            return None
        problems = [
            f"target {iqn} is saved but not live in {CONFIGFS_TARGET}"
            for iqn in sorted(owned)
            if not node_path_exists(runner, f"{CONFIGFS_TARGET}/iscsi/{iqn}")
        ]
        return TargetsSeen(owned, (), tuple(problems))

    def delete(self, runner: Runner, plan: IscsiPlan) -> None:
        saved = self._saved(runner)
        iqns = sorted({*(i for i in saved if plan.owns(i)), *(t.iqn for t in plan.targets)})
        if not node_path_exists(runner, TARGETCLI):
            return
        for iqn in iqns:
            stores = dict(saved[iqn].stores) if iqn in saved else {}
            for target in plan.targets:
                if target.iqn == iqn:
                    stores.setdefault(backstore_name(plan, target.name), backstore_type(target))
            self._run(runner, removal_commands(plan, iqn, stores), {})
        runner.run(["targetcli", "saveconfig"], timeout=TARGETCLI_TIMEOUT, check=False)
