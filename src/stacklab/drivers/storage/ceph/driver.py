"""Role driver for a lab's Ceph cluster (resource kind "ceph"): dispatches on the spec's `implementation`.

`packages` (packages.py) builds the cluster by hand from the Debian daemons; `cephadm` (cephadm.py) runs the
orchestrated containers. Both share cluster.py (the admin CLI, waits, keys, client distribution) and conf.py.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from stacklab.drivers.base import BaseDriver, DriverContext, recorded_spec, register
from stacklab.drivers.storage.ceph.cephadm import CephadmCeph
from stacklab.drivers.storage.ceph.cluster import Waiter, remove_clients
from stacklab.drivers.storage.ceph.conf import CephSpec, CephSpecError
from stacklab.drivers.storage.ceph.packages import PackagesCeph
from stacklab.errors import PlanError
from stacklab.plan.diff import default_diff
from stacklab.plan.resource import Action, Change, Observed, Resource

LOG = logging.getLogger(__name__)


class CephImplementation(Protocol):
    name: str

    def observe(self, spec: CephSpec, ctx: DriverContext, resource_id: str) -> Observed | None: ...

    def apply(self, spec: CephSpec, ctx: DriverContext, resource_id: str) -> Mapping[str, Any]: ...

    def delete(self, spec: CephSpec, ctx: DriverContext, resource_id: str) -> None: ...


def _osds_only_grew(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when the only spec change adds OSDs (more per node, or new nodes) and keeps existing sizes."""
    if {k: v for k, v in old.items() if k != "osds"} != {k: v for k, v in new.items() if k != "osds"}:
        return False
    try:
        old_spec, new_spec = CephSpec.from_spec("x", old), CephSpec.from_spec("x", new)
    except (CephSpecError, KeyError, TypeError, ValueError):
        return False
    for node in old_spec.osd_hosts:
        before, after = old_spec.osd_sizes(node), new_spec.osd_sizes(node)
        if after[: len(before)] != before:
            return False
    return True


@register("ceph")
@dataclass
class CephDriver(BaseDriver):
    """Ceph cluster of a lab: `packages` (hand-built daemons) or `cephadm` (orchestrated containers).

    A replace (different mon set, implementation, replicas …) deletes the old cluster, then builds the new one
    with the same fsid and cephx keys. A failed apply leaves daemons and files that carry the lab's marker
    in ceph.conf; `up` resumes from them (every step checks whether it is already done) and `delete` removes them.
    """

    kind = "ceph"
    updatable = frozenset({"pools", "clients"})
    # the nodes' storage addresses came into the spec after labs were recorded without them (plan/diff.py)
    added = frozenset({"storage_addresses"})
    waiter: Waiter = field(default_factory=Waiter)
    new_uuid: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))

    def implementation(self, name: str) -> CephImplementation:
        if name == "packages":
            return PackagesCeph(self.waiter, self.new_uuid)
        if name == "cephadm":
            return CephadmCeph(self.waiter)
        raise PlanError(f"unknown Ceph implementation {name!r}", hint="use `packages` or `cephadm`")

    @staticmethod
    def spec_of(resource_id: str, name: str, spec: Mapping[str, Any]) -> CephSpec:
        try:
            return CephSpec.from_spec(name, spec)
        except CephSpecError as exc:
            raise PlanError(str(exc), resource=resource_id, hint="fix storage.ceph in the lab file") from None

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        spec = self.spec_of(resource.id, resource.name, resource.spec)
        return self.implementation(spec.implementation).observe(spec, ctx, resource.id)

    def diff(self, resource: Resource, observed: Observed | None, recorded: Mapping[str, Any] | None) -> Change:
        spec = self.spec_of(resource.id, resource.name, resource.spec)
        if observed is not None and observed.owned and "mons" in observed.facts:
            have = sorted(observed.facts["mons"])
            if have != sorted(spec.mon_names):
                reason = f"monitors {have} != {sorted(spec.mon_names)}: the cluster is rebuilt"
                return Change(resource, Action.REPLACE, (reason,), observed, recorded)
        change = default_diff(resource, observed, recorded, updatable=self.updatable, added=self.added)
        if change.action is Action.REPLACE and recorded is not None:
            old = recorded.get("spec", {})
            if old.get("implementation") == resource.spec.get("implementation") and _osds_only_grew(old, resource.spec):
                return Change(resource, Action.UPDATE, (*change.reasons, "OSDs are added in place"), observed, recorded)
        return change

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        resource = change.resource
        spec = self.spec_of(resource.id, resource.name, resource.spec)
        impl = self.implementation(spec.implementation)
        if change.action is Action.REPLACE and change.recorded and change.recorded.get("spec"):
            old = self.spec_of(resource.id, resource.name, change.recorded["spec"])
            ctx.progress(f"{resource.id}: removing the old cluster before rebuilding it")
            self.implementation(old.implementation).delete(old, ctx, resource.id)
        return impl.apply(spec, ctx, resource.id)

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        found = recorded_spec(resource_id, recorded)
        if found is None:
            return
        raw, name = found
        spec = self.spec_of(resource_id, name, raw)
        if spec.implementation == "packages" and {*spec.nodes, *spec.client_nodes} <= ctx.vanishing_nodes:
            # daemons, mon stores, OSD block files, conf and keyrings all live in nodes deleted in this run
            LOG.info("%s: every node of the cluster is deleted in this run; the cluster goes with them", resource_id)
            return
        remove_clients(spec, ctx, resource_id)
        self.implementation(spec.implementation).delete(spec, ctx, resource_id)
