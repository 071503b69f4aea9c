"""Role driver for the NFS server (resource kind "nfs", `nfs/<node>`): dispatches on the spec's `implementation`.

`ganesha` (ganesha.py, NFS-Ganesha with FSAL VFS in user space) runs everywhere, including LXC system
containers on the CI host; `knfsd` (knfsd.py, the kernel server from nfs-kernel-server) needs nfsd in the
node's kernel, so on the CI host it is proven by unit and golden tests only. Both implement `NfsServerBackend`:
they render their configuration with a pure function (golden-tested), write it on the node only when it changed,
(re)start or reload their systemd unit, and observe by parsing the configuration back from the node and comparing
it with the parse of what they would render, so a second `up` plans nothing.

Policy common to both: the server binds to the node's br-storage address (spec `address`); every export is
read-write, no_root_squash, for the storage network (spec `clients`, a CIDR) and nobody else; the export path is
the same for NFSv3 and NFSv4 (ganesha's Pseudo path equals the real path). Export directories are created; the
optional `size_mib` of an export is informational (neither server enforces quotas), and `delete` leaves the
export data in place (it goes with the node).

Every command runs through `ctx.on_node(node)` as an argv list with a timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from stacklab.drivers.base import BaseDriver, Driver, DriverContext, known_implementation, recorded_spec, register
from stacklab.drivers.nodes.firewall import ensure_filter, filter_problems, remove_filter
from stacklab.drivers.storage.nfs.backends import backend_for
from stacklab.drivers.storage.nfs.types import FILTER, FILTER_PORTS, ExportLayout, NfsLayout, state_drift
from stacklab.errors import PlanError
from stacklab.plan.resource import Change, Observed, Resource

LOG = logging.getLogger(__name__)
IMPLEMENTATIONS = ("ganesha", "knfsd")


def nfs_layout(resource_id: str, node: str, spec: Mapping[str, Any], lab_name: str) -> NfsLayout:
    """Pure: the resolved NFS server of one `nfs/<node>` spec."""
    hint = "use `ganesha` (user space, runs anywhere) or `knfsd` (kernel, needs nfsd)"
    implementation = known_implementation(resource_id, spec, IMPLEMENTATIONS, "NFS server", hint)
    versions = tuple(sorted({int(v) for v in spec.get("versions", (3, 4))}))
    if not versions or any(v not in (3, 4) for v in versions):
        raise PlanError(f"NFS versions {list(versions)} not supported", resource=resource_id, hint="use 3 and/or 4")
    clients = spec.get("clients")
    if not clients:
        raise PlanError(
            "the lab has no storage network to export to", resource=resource_id, hint="add networks.storage"
        )
    exports = tuple(
        ExportLayout(
            name=str(e["name"]),
            path=str(e["path"]),
            export_id=i + 1,
            size_mib=int(e["size_mib"]) if e.get("size_mib") is not None else None,
        )
        for i, e in enumerate(spec.get("exports", ()))
    )
    return NfsLayout(
        lab=lab_name,
        node=node,
        implementation=implementation,
        address=str(spec["address"]),
        versions=versions,
        clients=str(clients),
        exports=exports,
    )


def outputs_of(plan: NfsLayout) -> dict[str, Any]:
    """Pure: what later suites and services (glance/cinder/nova NFS) read from the state file."""
    return {
        "implementation": plan.implementation,
        "server": plan.address,
        "exports": {e.name: e.path for e in plan.exports},
        "versions": list(plan.versions),
        "clients": plan.clients,
    }


class NfsDriver(BaseDriver):
    """NFS server of a lab on one node. Exports, versions, clients and address change in place; another
    implementation replaces (the engine deletes with the recorded spec first)."""

    kind = "nfs"
    updatable = frozenset({"exports", "versions", "clients", "address"})

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        plan = nfs_layout(resource.id, resource.name, resource.spec, ctx.lab.name)
        runner = ctx.on_node_if_up(plan.node)
        if runner is None:
            return None
        backend = backend_for(plan.implementation)
        seen = backend.observe(runner, plan)
        if seen is None:
            return None
        facts = {"implementation": plan.implementation, "state": dict(seen.state)}
        if not seen.owned:
            return Observed(False, facts)
        drift = [*seen.problems, *state_drift(backend.desired_state(plan), seen.state)]
        if plan.clients:
            drift += filter_problems(runner, plan.lab, FILTER, FILTER_PORTS, plan.clients)
        return Observed(True, facts, tuple(drift))

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        resource = change.resource
        plan = nfs_layout(resource.id, resource.name, resource.spec, ctx.lab.name)
        backend = backend_for(plan.implementation)
        runner = ctx.on_node(plan.node)
        backend.check_node(runner, plan, resource.id)
        seen = backend.observe(runner, plan)
        if seen is not None and not seen.owned:
            raise PlanError(
                f"{plan.node} already has an NFS configuration that is not this lab's",
                resource=resource.id,
                hint="use a storage node of this lab only; stacklab never overwrites foreign configuration",
            )
        ctx.progress(f"{resource.id}: {plan.implementation} on {plan.address}, {len(plan.exports)} export(s)")
        backend.ensure(runner, plan, resource.id)
        if plan.clients:
            ctx.progress(f"{resource.id}: only {plan.clients} reaches ports {', '.join(map(str, FILTER_PORTS))}")
            ensure_filter(runner, plan.lab, FILTER, FILTER_PORTS, plan.clients)
        return outputs_of(plan)

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        found = recorded_spec(resource_id, recorded)
        if found is None:
            return
        raw, node = found
        plan = nfs_layout(resource_id, node, raw, ctx.lab.name)
        if node in ctx.vanishing_nodes and plan.implementation == "ganesha":
            # a user-space server whose exports, config and port filter are in the node (knfsd's are the kernel's)
            LOG.info("%s: node %s is deleted in this run; ganesha and its exports go with it", resource_id, node)
            return
        runner = ctx.node_for_delete(resource_id, node, "its NFS server goes")
        if runner is None:
            return
        backend_for(plan.implementation).delete(runner, plan)
        remove_filter(runner, FILTER)


@register("nfs")
def _factory() -> Driver:
    return NfsDriver()
