"""Role driver for the NFS server (resource kind "nfs", `nfs/<node>`): dispatches on the spec's `implementation`.

`ganesha` (nfs_ganesha.py, NFS-Ganesha with FSAL VFS in user space) runs everywhere, including LXC system
containers on the CI host; `knfsd` (nfs_knfsd.py, the kernel server from nfs-kernel-server) needs nfsd in the
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from stacklab.drivers.base import BaseDriver, Driver, DriverContext, register
from stacklab.drivers.node_files import FILE_TIMEOUT
from stacklab.drivers.node_firewall import ensure_filter, filter_problems, remove_filter
from stacklab.errors import PlanError
from stacklab.exec.runner import Runner
from stacklab.plan.resource import Change, Observed, Resource

if TYPE_CHECKING:
    from stacklab.model.lab import Lab

LOG = logging.getLogger(__name__)

IMPLEMENTATIONS = ("ganesha", "knfsd")
# The node's port filter (node_firewall): rpcbind, nfs and the pinned MOUNT, statd and lockd ports reachable from
# `clients` only. statd and lockd (NFSv3 locking, knfsd) default to random ports the filter could not name.
FILTER = "nfs"
MOUNT_PORT = 20048
STATD_PORT = 32765
STATD_OUTGOING_PORT = 32766
LOCKD_PORT = 32768
FILTER_PORTS = (111, 2049, MOUNT_PORT, STATD_PORT, LOCKD_PORT)


@dataclass(frozen=True)
class ExportPlan:
    name: str
    path: str
    export_id: int
    size_mib: int | None = None


@dataclass(frozen=True)
class NfsPlan:
    lab: str
    node: str
    implementation: str
    address: str
    versions: tuple[int, ...]
    clients: str
    exports: tuple[ExportPlan, ...]

    @property
    def marker(self) -> str:
        """First line of every file the backends write: the ownership mark `observe` and `delete` look for."""
        return f"# stacklab lab={self.lab}"


def plan_nfs(resource_id: str, node: str, spec: Mapping[str, Any], lab: Lab) -> NfsPlan:
    """Pure: the resolved NFS server of one `nfs/<node>` spec."""
    implementation = str(spec["implementation"])
    if implementation not in IMPLEMENTATIONS:
        raise PlanError(
            f"unknown NFS server implementation {implementation!r}",
            resource=resource_id,
            hint="use `ganesha` (user space, runs anywhere) or `knfsd` (kernel, needs nfsd)",
        )
    versions = tuple(sorted({int(v) for v in spec.get("versions", (3, 4))}))
    if not versions or any(v not in (3, 4) for v in versions):
        raise PlanError(f"NFS versions {list(versions)} not supported", resource=resource_id, hint="use 3 and/or 4")
    clients = spec.get("clients")
    if not clients:
        raise PlanError(
            "the lab has no storage network to export to", resource=resource_id, hint="add networks.storage"
        )
    exports = tuple(
        ExportPlan(
            name=str(e["name"]),
            path=str(e["path"]),
            export_id=i + 1,
            size_mib=int(e["size_mib"]) if e.get("size_mib") is not None else None,
        )
        for i, e in enumerate(spec.get("exports", ()))
    )
    return NfsPlan(
        lab=lab.name,
        node=node,
        implementation=implementation,
        address=str(spec["address"]),
        versions=versions,
        clients=str(clients),
        exports=exports,
    )


@dataclass(frozen=True)
class NfsSeen:
    """What a backend found: `owned` (its files carry the lab's marker), the normalized configuration state
    (comparable with the backend's `desired_state`), and problems such as a stopped service."""

    owned: bool
    state: Mapping[str, Any]
    problems: tuple[str, ...] = ()


class NfsServerBackend(Protocol):
    implementation: str

    def check_node(self, runner: Runner, plan: NfsPlan, resource_id: str) -> None:
        """Raise PlanError when the node cannot run this server (before anything is touched)."""
        ...

    def desired_state(self, plan: NfsPlan) -> Mapping[str, Any]:
        """Pure: the normalized state the rendered configuration parses to."""
        ...

    def ensure(self, runner: Runner, plan: NfsPlan, resource_id: str) -> None:
        """Write the configuration, make the directories, (re)start or reload the service. Idempotent."""
        ...

    def observe(self, runner: Runner, plan: NfsPlan) -> NfsSeen | None:
        """Read-only: the server's configuration on the node, or None when there is none of ours."""
        ...

    def delete(self, runner: Runner, plan: NfsPlan) -> None:
        """Stop serving the lab's exports and remove the configuration files carrying the lab's marker."""
        ...


def backend_for(implementation: str) -> NfsServerBackend:
    if implementation == "ganesha":
        from stacklab.drivers.nfs_ganesha import GaneshaBackend

        return GaneshaBackend()
    if implementation == "knfsd":
        from stacklab.drivers.nfs_knfsd import KnfsdBackend

        return KnfsdBackend()
    raise PlanError(f"unknown NFS server implementation {implementation!r}", hint="use `ganesha` or `knfsd`")


def state_drift(desired: Mapping[str, Any], seen: Mapping[str, Any]) -> list[str]:
    """Pure: differences between two normalized states, one line per top-level key or export path."""
    out: list[str] = []
    for key in sorted(set(desired) | set(seen)):
        want, have = desired.get(key), seen.get(key)
        if want == have:
            continue
        if key == "exports" and isinstance(want, Mapping) and isinstance(have, Mapping):
            for path in sorted(set(want) | set(have)):
                if path not in have:
                    out.append(f"export {path} missing")
                elif path not in want:
                    out.append(f"export {path} is not in the lab file")
                elif want[path] != have[path]:
                    out.append(f"export {path}: {have[path]} != {want[path]}")
        else:
            out.append(f"{key}: {have!r} != {want!r}")
    return out


def make_dirs(runner: Runner, plan: NfsPlan) -> None:
    for export in plan.exports:
        runner.run(["mkdir", "-p", export.path], timeout=FILE_TIMEOUT)


def outputs_of(plan: NfsPlan) -> dict[str, Any]:
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
        plan = plan_nfs(resource.id, resource.name, resource.spec, ctx.lab)
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
        plan = plan_nfs(resource.id, resource.name, resource.spec, ctx.lab)
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
        raw = recorded.get("spec")
        if not raw:
            LOG.info("%s: nothing recorded to delete", resource_id)
            return
        node = str(recorded.get("name") or resource_id.partition("/")[2])
        plan = plan_nfs(resource_id, node, raw, ctx.lab)
        runner = ctx.on_node_if_up(node)
        if runner is None:
            LOG.warning("%s: node %s is not up; its NFS server goes with the node", resource_id, node)
            return
        backend_for(plan.implementation).delete(runner, plan)
        remove_filter(runner, FILTER)


@register("nfs")
def _factory() -> Driver:
    return NfsDriver()
