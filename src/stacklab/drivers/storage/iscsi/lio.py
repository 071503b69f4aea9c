"""LIO (the kernel's iSCSI target, driven through rtslib-fb): the iSCSI backend for nodes with a full kernel.

LIO lives in configfs (`/sys/kernel/config/target`, modules target_core_mod and iscsi_target_mod). Containers
share the host kernel, and the CI host has neither configfs nor loadable modules (shared/host-notes/storage.md
section 2a), so `check_node` raises PlanError there; in a VM storage node (Debian's cloud kernel) it runs for real.

What it builds, per target (`render_lio_request()`, pure, golden-tested):
- a backstore named `<lab>-<target>`: `fileio` on the sparse file (write-through), or `block` on the LV
  (`backing: rbd` is a PlanError earlier: LIO would need the kernel rbd module to map the image);
- the target `<iqn_prefix>:<target>`, TPG 1 with one portal on the storage address only, LUN 1 on the backstore;
- ACLs for the client nodes' initiator IQNs, each mapping LUN 1; generate_node_acls=0 (no demo mode) and, with
  CHAP, authentication=1 and userid/password on every ACL.
Each target is one run of `LIO_TOOL` (a small rtslib-fb program, the library targetcli-fb is built on, run by the
node's python3) that reads its request as JSON on stdin: the CHAP password never reaches an argv (where any user
of the node could read it in /proc), and one process replaces the ten targetcli calls a target took before (each
targetcli start costs 5-8 s of Python under TCG: 72 s per target, measured on a VM node). The tool then saves the
whole configuration to /etc/rtslib-fb-target/saveconfig.json (0600, written by rtslib), which Debian's
rtslib-fb-targetctl.service restores at boot; observation parses that file (`parse_saveconfig()`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stacklab.drivers.storage.iscsi.types import (
    DATA_LUN,
    ISCSI_PORT,
    IscsiLayout,
    TargetLayout,
    TargetSeen,
    TargetsSeen,
)
from stacklab.errors import PlanError
from stacklab.exec.node_files import FILE_TIMEOUT, node_has_systemd, node_path_exists, read_node_file, systemctl
from stacklab.exec.runner import Runner

LOG = logging.getLogger(__name__)

PYTHON = "/usr/bin/python3"  # Debian's, which has python3-rtslib-fb
RTSLIB = "/usr/lib/python3/dist-packages/rtslib_fb"
TOOL_TIMEOUT = 120.0
SAVECONFIG = "/etc/rtslib-fb-target/saveconfig.json"
RESTORE_UNIT = "rtslib-fb-targetctl.service"
CONFIGFS_TARGET = "/sys/kernel/config/target"
NO_LIO_HINT = (
    "LIO needs configfs and target_core_mod in the node's kernel, which a container shares with a host that "
    "lacks them. Use `implementation: tgt` (user space, runs in containers) or a VM storage node (`kind: vm`)"
)

# One request (JSON on stdin) -> LIO through rtslib-fb. `remove` deletes the target `iqn` and the backstores named
# in `remove_stores` (name -> plugin) when they exist; `apply` does the same, then builds `build`; every op saves
# the configuration. Errors end in a traceback on stderr and a non-zero exit, which fails the step.
LIO_TOOL = """\
import json, sys
from rtslib_fb import (BlockStorageObject, FabricModule, FileIOStorageObject, LUN, MappedLUN, NetworkPortal,
                       NodeACL, RTSRoot, Target, TPG)
req = json.load(sys.stdin)
root = RTSRoot()
if req["op"] in ("apply", "remove"):
    for target in list(root.targets):
        if target.wwn == req["iqn"]:
            target.delete()
    stores = req.get("remove_stores", {})
    for so in list(root.storage_objects):
        if stores.get(so.name) == so.plugin:
            so.delete()
if req["op"] == "apply":
    b = req["build"]
    store = b["store"]
    if store["plugin"] == "block":
        so = BlockStorageObject(store["name"], dev=store["dev"])
    else:
        so = FileIOStorageObject(store["name"], dev=store["dev"], size=store["size"], write_back=False)
    tpg = TPG(Target(FabricModule("iscsi"), req["iqn"]), 1)
    NetworkPortal(tpg, b["portal"]["ip"], b["portal"]["port"])
    lun = LUN(tpg, b["lun"], so)
    for name, value in sorted(b["attributes"].items()):
        tpg.set_attribute(name, value)
    for spec in b["acls"]:
        acl = NodeACL(tpg, spec["initiator"])
        MappedLUN(acl, b["lun"], lun, write_protect=False)
        if spec.get("chap_userid"):
            acl.chap_userid = spec["chap_userid"]
            acl.chap_password = spec["chap_password"]
    tpg.enable = True
root.save_to_file()
"""


def backstore_name(plan: IscsiLayout, target: str) -> str:
    return f"{plan.lab}-{target}"


def backstore_type(target: TargetLayout) -> str:
    return "block" if target.backing == "lvm" else "fileio"


@dataclass(frozen=True)
class LioRequest:
    """One LIO_TOOL run. CHAP passwords appear in `body` as {"secret": <name>} until `payload()` fills them in
    from the lab's secrets (for stdin only); `display()` keeps the names (golden files, logs)."""

    body: Mapping[str, Any]

    def payload(self, secrets: Mapping[str, str]) -> str:
        return json.dumps(_fill(self.body, secrets), sort_keys=True)

    def display(self) -> str:
        return json.dumps(self.body, indent=1, sort_keys=True)

    @staticmethod
    def argv() -> list[str]:
        return [PYTHON, "-c", LIO_TOOL]


def _fill(value: Any, secrets: Mapping[str, str]) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"secret"}:
            return secrets[str(value["secret"])]
        return {k: _fill(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, secrets) for v in value]
    return value


def render_lio_request(plan: IscsiLayout, target: TargetLayout, remove_stores: Mapping[str, str]) -> LioRequest:
    """Pure: the request that removes the old copy of a target (and `remove_stores`) and builds it from nothing."""
    kind = backstore_type(target)
    store: dict[str, Any] = {"plugin": kind, "name": backstore_name(plan, target.name), "dev": target.path}
    if kind == "fileio":
        store["size"] = target.size_mib * 1024 * 1024
    acls: list[dict[str, Any]] = []
    for initiator in target.initiators:
        acl: dict[str, Any] = {"initiator": initiator}
        if target.chap_user and target.chap_secret:
            acl.update(chap_userid=target.chap_user, chap_password={"secret": target.chap_secret})
        acls.append(acl)
    build = {
        "store": store,
        "portal": {"ip": plan.portal_ip, "port": ISCSI_PORT},
        "lun": DATA_LUN,
        "attributes": {
            "authentication": "1" if target.chap_user else "0",
            "generate_node_acls": "0",
            "demo_mode_write_protect": "1",
        },
        "acls": acls,
    }
    return LioRequest({"op": "apply", "iqn": target.iqn, "remove_stores": dict(remove_stores), "build": build})


def removal_request(plan: IscsiLayout, iqn: str, stores: Mapping[str, str]) -> LioRequest:
    """Pure: delete a target and the lab's backstores it used (`stores`: name -> backstore type)."""
    ours = {name: kind for name, kind in sorted(stores.items()) if name.startswith(f"{plan.lab}-")}
    return LioRequest({"op": "remove", "iqn": iqn, "remove_stores": ours})


def render_lio_script(plan: IscsiLayout) -> str:
    """Pure: every target's request as text (golden files and `--debug` logs; secrets by name)."""
    lines = [f"# stacklab lab={plan.lab}: LIO targets on {plan.portal}, one {PYTHON} -c LIO_TOOL run each"]
    for target in plan.targets:
        stores = {backstore_name(plan, target.name): backstore_type(target)}
        lines.append(f"# target {target.name}")
        lines.append(render_lio_request(plan, target, stores).display())
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
    def _run(runner: Runner, request: LioRequest, secrets: Mapping[str, str], *, check: bool = True) -> None:
        LOG.debug("lio: %s", request.display())
        runner.run(request.argv(), timeout=TOOL_TIMEOUT, check=check, input=request.payload(secrets))

    def check_node(self, runner: Runner, plan: IscsiLayout, resource_id: str) -> None:
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
        if not node_path_exists(runner, RTSLIB):
            raise PlanError(
                f"{plan.node} has no rtslib-fb ({RTSLIB})",
                resource=resource_id,
                hint="the storage image must include `python3-rtslib-fb` (and `targetcli-fb` for its restore unit)",
            )

    def prepare(self, runner: Runner, plan: IscsiLayout, secrets: Mapping[str, str]) -> None:
        # LIO keeps no daemon; the kernel serves the portals as soon as they exist.
        return None

    def _saved(self, runner: Runner) -> dict[str, LioTarget]:
        text = read_node_file(runner, SAVECONFIG)
        return parse_saveconfig(text) if text is not None else {}

    def ensure_target(
        self, runner: Runner, plan: IscsiLayout, target: TargetLayout, secrets: Mapping[str, str]
    ) -> None:
        old = self._saved(runner).get(target.iqn)
        stores = dict(old.stores) if old is not None else {}
        stores.setdefault(backstore_name(plan, target.name), backstore_type(target))
        self._run(runner, render_lio_request(plan, target, stores), secrets)

    def remove_target(self, runner: Runner, plan: IscsiLayout, iqn: str) -> None:
        old = self._saved(runner).get(iqn)
        self._run(runner, removal_request(plan, iqn, old.stores if old else {}), {})

    def finish(self, runner: Runner, plan: IscsiLayout) -> None:
        # every tool run saved the configuration; the restore unit brings it back at boot
        if node_has_systemd(runner):
            systemctl(runner, "enable", RESTORE_UNIT)

    def observe(self, runner: Runner, plan: IscsiLayout, secrets: Mapping[str, str]) -> TargetsSeen | None:
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

    def delete(self, runner: Runner, plan: IscsiLayout) -> None:
        saved = self._saved(runner)
        iqns = sorted({*(i for i in saved if plan.owns(i)), *(t.iqn for t in plan.targets)})
        if not node_path_exists(runner, RTSLIB):
            return
        for iqn in iqns:
            stores = dict(saved[iqn].stores) if iqn in saved else {}
            for target in plan.targets:
                if target.iqn == iqn:
                    stores.setdefault(backstore_name(plan, target.name), backstore_type(target))
            self._run(runner, removal_request(plan, iqn, stores), {}, check=False)
