"""Role driver for the iSCSI target (resource kind "iscsi", `iscsi/<node>`): dispatches on the spec's `implementation`.

`tgt` (tgt.py, user-space tgtd + tgtadm) runs everywhere, including LXC system containers on the CI host;
`lio` (lio.py, the kernel's LIO target driven by targetcli-fb) needs configfs and target_core_mod in the
node's kernel, so on the CI host it is proven by unit and golden tests only. Both implement
`IscsiTargetBackend` and share what this module holds: the resolved plan of every target (IQN, LUN, backing
store, ACL, CHAP account), the backing stores themselves, the comparison of what a backend observed with the plan,
and the outputs later suites read.

Names and policy, common to both backends:
- target IQN `<iqn_prefix>:<target>` (the prefix carries the lab name, which is the ownership mark);
- initiator IQNs are derived per client node by `initiator_iqn(lab, node)`; the ACL admits exactly those;
- CHAP (spec `chap`): one account per target, user `<lab>-<target>`, secret `iscsi-chap-<target>` made once per
  lab by stacklab.secrets (0600 under the lab's state dir). Secrets reach the node only through stdin (config
  files written with `install /dev/stdin`, or `xargs` appending them to a command), never through argv;
- the portal listens on the node's br-storage address only (spec `portal`), port 3260, and a port filter on the
  node (nodes/firewall.py) lets only the storage CIDR reach it; target ACLs are by initiator IQN only;
- backing stores: `file` = sparse file /var/lib/stacklab/iscsi/<target>.img; `lvm` = LV `iscsi-<target>` in the
  lab's VG on the same node (storage.lvm); `rbd` = RBD image `<pool>/iscsi-<target>` (pool `volumes` when the lab
  has it) served by tgt's rbd backing store (tgt-rbd). LIO cannot serve RBD without the kernel rbd module, so
  `lio` + `rbd` is a PlanError.
- every target has one data LUN, number 1.

Every command runs through `ctx.on_node(node)` as an argv list with a timeout; each step checks what exists first,
so `apply` converges and a second `up` plans nothing. `delete` removes the lab's targets, accounts, persisted
config and backing stores (files, LVs, RBD images named after the targets).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stacklab.drivers.base import BaseDriver, Driver, DriverContext, known_implementation, recorded_spec, register
from stacklab.drivers.nodes.firewall import ensure_filter, filter_problems, remove_filter
from stacklab.drivers.storage.iscsi.backends import backend_for
from stacklab.drivers.storage.iscsi.types import (
    CEPH_CONF,
    CHAP_SECRET_LENGTH,
    FILE_DIR,
    ISCSI_PORT,
    RBD_TIMEOUT,
    IscsiLayout,
    TargetLayout,
    chap_secret_name,
    chap_user,
    drift_of,
    initiator_iqn,
    lv_name,
    rbd_image_name,
    target_iqn,
    target_problems,
)
from stacklab.drivers.storage.lvm.driver import ensure_lv, remove_lv
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.node_files import FILE_TIMEOUT, node_path_exists
from stacklab.exec.runner import Runner
from stacklab.plan.resource import Change, Observed, Resource
from stacklab.secrets import get_or_create_secret, read_secret

LOG = logging.getLogger(__name__)
IMPLEMENTATIONS = ("tgt", "lio")
FILTER = "iscsi"  # the node's port filter (nodes/firewall.py) for the portal


@dataclasses.dataclass(frozen=True)
class _Stores:
    """Where non-file backing stores live in this lab: the node's VG (storage.lvm on this node) and the RBD pool."""

    vg: str | None
    rbd_pool: str | None

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> _Stores:
        """From the spec's `stores` (plan/expand.py); a spec recorded before it had them names neither."""
        stores = spec.get("stores") or {}
        vg, pool = stores.get("vg"), stores.get("rbd_pool")
        return cls(str(vg) if vg else None, str(pool) if pool else None)


def _backing_path(
    resource_id: str, name: str, backing: str, *, node: str, implementation: str, stores: _Stores, strict: bool
) -> str:
    """The backing store of target `name`: a file path, /dev/VG/LV or pool/image; "" when not strict and unservable."""
    vg, rbd_pool = stores.vg, stores.rbd_pool
    if backing == "file":
        return f"{FILE_DIR}/{name}.img"
    if not strict and (backing not in ("lvm", "rbd") or (vg if backing == "lvm" else rbd_pool) is None):
        return ""
    if backing == "lvm":
        if vg is None:
            raise PlanError(
                f"target {name} has `backing: lvm` but storage.lvm is not on {node}",
                resource=resource_id,
                hint=f"add `storage.lvm: {{node: {node}}}` or use `backing: file`",
            )
        return f"/dev/{vg}/{lv_name(name)}"
    if backing == "rbd":
        if rbd_pool is None:
            raise PlanError(
                f"target {name} has `backing: rbd` but the lab has no Ceph pools",
                resource=resource_id,
                hint="add storage.ceph to the lab, or use `backing: file`",
            )
        if implementation == "lio" and strict:
            raise PlanError(
                f"target {name}: LIO cannot serve RBD images (it needs the kernel rbd module to map them)",
                resource=resource_id,
                hint="use `implementation: tgt` (its rbd backing store talks to Ceph in user space) "
                "or `backing: file`/`lvm` for LIO",
            )
        return f"{rbd_pool}/{rbd_image_name(name)}"
    raise PlanError(f"target {name}: unknown backing {backing!r}", resource=resource_id)


def iscsi_layout(resource_id: str, node: str, spec: Mapping[str, Any], lab: str, *, strict: bool = True) -> IscsiLayout:
    """Pure: resolve names, backing paths, ACLs and CHAP accounts for every target of the spec.

    Raises PlanError when a target cannot be served as asked (lvm backing without a VG on this node, rbd without
    Ceph in the lab, LIO with rbd, an unknown implementation). With `strict=False` (used by `delete`, whose lab
    file may have changed since) such targets keep an empty path instead.
    """
    hint = "use `tgt` (user space, runs anywhere) or `lio` (kernel, needs configfs)"
    implementation = known_implementation(resource_id, spec, IMPLEMENTATIONS, "iSCSI target", hint)
    iqn_prefix = str(spec["iqn_prefix"])
    chap = bool(spec.get("chap", True))
    initiator_nodes = tuple(str(n) for n in spec.get("initiators", ()))
    initiators = tuple(initiator_iqn(lab, n) for n in initiator_nodes)
    allowed = str(spec["allowed_network"]) if spec.get("allowed_network") else None
    stores = _Stores.of(spec)
    targets: list[TargetLayout] = []
    for raw in spec.get("targets", ()):
        name = str(raw["name"])
        backing = str(raw.get("backing", "file"))
        size = int(raw["size_mib"])
        path = _backing_path(
            resource_id, name, backing, node=node, implementation=implementation, stores=stores, strict=strict
        )
        targets.append(
            TargetLayout(
                name=name,
                iqn=target_iqn(iqn_prefix, name),
                backing=backing,
                size_mib=size,
                path=path,
                initiators=initiators,
                chap_user=chap_user(lab, name) if chap else None,
                chap_secret=chap_secret_name(name) if chap else None,
            )
        )
    return IscsiLayout(
        lab=lab,
        node=node,
        implementation=implementation,
        portal_ip=str(ipaddress.ip_address(str(spec["portal"]))),
        iqn_prefix=iqn_prefix,
        chap=chap,
        allowed_network=allowed,
        initiator_nodes=initiator_nodes,
        targets=tuple(targets),
        vg=stores.vg,
        rbd_pool=stores.rbd_pool,
    )


# --- backing stores (shared) --------------------------------------------------------------------------------


def ensure_backing(runner: Runner, plan: IscsiLayout, target: TargetLayout, resource_id: str) -> None:
    """Create the target's backing store on the node unless it exists."""
    if target.backing == "file":
        runner.run(["mkdir", "-p", FILE_DIR], timeout=FILE_TIMEOUT)
        if not node_path_exists(runner, target.path):
            runner.run(["truncate", "--size", f"{target.size_mib}M", target.path], timeout=FILE_TIMEOUT)
    elif target.backing == "lvm":
        assert plan.vg is not None
        ensure_lv(runner, plan.vg, lv_name(target.name), target.size_mib, lab=plan.lab)
    elif target.backing == "rbd":
        if not node_path_exists(runner, CEPH_CONF):
            raise StackLabError(
                f"target {target.name} is backed by RBD but {plan.node} has no {CEPH_CONF}",
                resource=resource_id,
                hint="the node needs the lab's ceph.conf and client.admin keyring (make it a Ceph node or client)",
            )
        if not runner.run(["rbd", "info", target.path], timeout=RBD_TIMEOUT, check=False).ok:
            runner.run(["rbd", "create", "--size", str(target.size_mib), target.path], timeout=RBD_TIMEOUT)


def _only_in_the_node(plan: IscsiLayout, ctx: DriverContext) -> bool:
    """Whether everything the targets hold lives in their node (or in a Ceph going in the same run): tgt is a
    user-space daemon and a file LUN a file in the node's root; LIO's configfs and an LV's device-mapper table
    are the host kernel's and are removed one by one."""
    ceph = ctx.lab.storage.ceph
    ceph_goes = ceph is not None and {*ceph.mons, *ceph.mgrs, *(o.node for o in ceph.osds)} <= ctx.vanishing_nodes
    return plan.implementation == "tgt" and all(
        t.backing == "file" or (t.backing == "rbd" and ceph_goes) for t in plan.targets
    )


def remove_backing(runner: Runner, target: TargetLayout) -> None:
    """Remove a target's backing store (recorded path; an empty path means nothing was made)."""
    if not target.path:
        return
    if target.backing == "file":
        runner.run(["rm", "-f", target.path], timeout=FILE_TIMEOUT)
    elif target.backing == "lvm":
        device = Path(target.path)  # /dev/VG/LV
        remove_lv(runner, device.parent.name, device.name)
    elif target.backing == "rbd" and runner.run(["rbd", "info", target.path], timeout=RBD_TIMEOUT, check=False).ok:
        runner.run(["rbd", "rm", "--no-progress", target.path], timeout=RBD_TIMEOUT)


def outputs_of(plan: IscsiLayout) -> dict[str, Any]:
    """Pure: what later suites and the client configuration read from the state file."""
    return {
        "implementation": plan.implementation,
        "portal": plan.portal,
        "targets": {
            t.name: {
                "iqn": t.iqn,
                "lun": t.lun,
                "backing": t.backing,
                "path": t.path,
                "size_mib": t.size_mib,
                "chap_user": t.chap_user,
            }
            for t in plan.targets
        },
        "chap_secret_names": {t.name: t.chap_secret for t in plan.targets if t.chap_secret},
        "initiators": {n: initiator_iqn(plan.lab, n) for n in plan.initiator_nodes},
    }


def chap_secrets(ctx: DriverContext, plan: IscsiLayout) -> dict[str, str]:
    """The plan's CHAP secrets by secret name, created once per lab (values are never logged)."""
    out: dict[str, str] = {}
    for target in plan.targets:
        if target.chap_secret:
            out[target.chap_secret] = get_or_create_secret(ctx.state_dir, target.chap_secret, length=CHAP_SECRET_LENGTH)
    return out


def existing_secrets(ctx: DriverContext, plan: IscsiLayout) -> dict[str, str]:
    """Read-only twin of chap_secrets(): the secrets already made (observe must not create any)."""
    out: dict[str, str] = {}
    for target in plan.targets:
        name = target.chap_secret
        stored = read_secret(ctx.state_dir, name) if name else None
        if name and stored is not None:
            out[name] = stored
    return out


# --- the role driver ----------------------------------------------------------------------------------------


class IscsiDriver(BaseDriver):
    """iSCSI targets of a lab on one storage node. Targets, ACLs and CHAP change in place; a new implementation,
    portal or IQN prefix replaces (the engine deletes with the recorded spec, then applies the new one)."""

    kind = "iscsi"
    updatable = frozenset({"targets", "initiators", "chap"})
    # Keys expand added later (the driver once read them from the lab): a lab recorded before them is unchanged.
    added = frozenset({"stores", "allowed_network"})

    @staticmethod
    def plan_of(
        resource_id: str, node: str, spec: Mapping[str, Any], ctx: DriverContext, *, strict: bool = True
    ) -> IscsiLayout:
        return iscsi_layout(resource_id, node, spec, ctx.lab.name, strict=strict)

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        plan = self.plan_of(resource.id, resource.name, resource.spec, ctx)
        runner = ctx.on_node_if_up(plan.node)
        if runner is None:
            return None
        seen = backend_for(plan.implementation).observe(runner, plan, existing_secrets(ctx, plan))
        if seen is None:
            return None
        facts = {
            "implementation": plan.implementation,
            "portals": list(seen.portals),
            "targets": {iqn: t.to_json() for iqn, t in sorted(seen.targets.items())},
        }
        drift = drift_of(plan, seen)
        if plan.allowed_network:
            drift += tuple(filter_problems(runner, plan.lab, FILTER, [ISCSI_PORT], plan.allowed_network))
        return Observed(True, facts, drift)

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        resource = change.resource
        plan = self.plan_of(resource.id, resource.name, resource.spec, ctx)
        backend = backend_for(plan.implementation)
        runner = ctx.on_node(plan.node)
        backend.check_node(runner, plan, resource.id)
        secrets = chap_secrets(ctx, plan)

        for target in plan.targets:
            ctx.progress(f"{resource.id}: backing store of {target.name} ({target.backing}, {target.size_mib} MiB)")
            ensure_backing(runner, plan, target, resource.id)
        ctx.progress(f"{resource.id}: {plan.implementation} on {plan.portal}")
        backend.prepare(runner, plan, secrets)
        seen = backend.observe(runner, plan, secrets)
        live = dict(seen.targets) if seen is not None else {}
        for iqn in sorted(live):
            if iqn not in {t.iqn for t in plan.targets}:
                ctx.progress(f"{resource.id}: removing target {iqn} (no longer in the lab file)")
                backend.remove_target(runner, plan, iqn)
        for target in plan.targets:
            have = live.get(target.iqn)
            if have is not None and not target_problems(plan, target, have):
                continue
            ctx.progress(f"{resource.id}: target {target.iqn}")
            backend.ensure_target(runner, plan, target, secrets)
        backend.finish(runner, plan)
        if plan.allowed_network:
            ctx.progress(f"{resource.id}: only {plan.allowed_network} reaches port {ISCSI_PORT}")
            ensure_filter(runner, plan.lab, FILTER, [ISCSI_PORT], plan.allowed_network)
        self._remove_dropped_backing(runner, plan, change.recorded)
        return outputs_of(plan)

    def _remove_dropped_backing(self, runner: Runner, plan: IscsiLayout, recorded: Mapping[str, Any] | None) -> None:
        """Targets that were in the recorded spec and are gone now: remove their backing stores too."""
        old_targets = (recorded or {}).get("outputs", {}).get("targets", {})
        keep = {t.name for t in plan.targets}
        for name, info in old_targets.items():
            if name in keep:
                continue
            old = TargetLayout(
                name=name,
                iqn=str(info.get("iqn", "")),
                backing=str(info.get("backing", "file")),
                size_mib=int(info.get("size_mib", 0)),
                path=str(info.get("path", "")),
                initiators=(),
                chap_user=None,
                chap_secret=None,
            )
            remove_backing(runner, old)

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        found = recorded_spec(resource_id, recorded)
        if found is None:
            return
        raw, node = found
        plan = self.plan_of(resource_id, node, raw, ctx, strict=False)
        if node in ctx.vanishing_nodes and _only_in_the_node(plan, ctx):
            LOG.info("%s: node %s is deleted in this run; tgt and its LUNs go with it", resource_id, node)
            return
        runner = ctx.node_for_delete(resource_id, node, "its targets go")
        if runner is None:
            return
        backend_for(plan.implementation).delete(runner, plan)
        remove_filter(runner, FILTER)
        recorded_targets = recorded.get("outputs", {}).get("targets", {})
        for target in plan.targets:
            path = str(recorded_targets.get(target.name, {}).get("path") or target.path)
            remove_backing(runner, dataclasses.replace(target, path=path))


@register("iscsi")
def _factory() -> Driver:
    return IscsiDriver()
