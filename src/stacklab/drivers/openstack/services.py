"""Role driver for OpenStack and what it needs (resource kind "service", `service/<name>`): one role per service.

The lab file lists services (`openstack.services`); expand gives each a resource that depends on its nodes, on
the services it needs (keystone on mariadb and memcached...) and, for cinder/glance/nova, on the storage. Roles
live in their own modules (infra: mariadb, rabbitmq, memcached; keystone, ...), listed in roles.py; a service
without a role is *pending* in the plan (`unsupported()`), never faked.

Every role runs on the controller node over SSH, renders its configuration with pure functions (golden-tested),
writes it only when it changed, (re)starts the Debian package's systemd unit, and observes by reading the files
back and asking the unit, so a second `up` plans nothing. Ownership: a marker file per service on the node
(`/etc/stacklab/services/<name>.json`) names the lab; a service marked by another lab is never touched.
Secrets (database and RabbitMQ passwords, the keystone admin password) are generated per lab, mode 0600.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from stacklab.drivers.base import BaseDriver, Driver, DriverContext, recorded_spec, register
from stacklab.drivers.openstack.common import ServiceRole, marker_owner, service_layout
from stacklab.drivers.openstack.roles import ROLES
from stacklab.errors import PlanError
from stacklab.exec.node_files import remove_node_files, write_node_file
from stacklab.plan.resource import Change, Observed, Resource

LOG = logging.getLogger(__name__)


class ServiceDriver(BaseDriver):
    """OpenStack services and their infrastructure on the controller; every spec change is applied in place."""

    kind = "service"
    updatable = frozenset({"release", "hosts", "controller", "address", "config", "addresses"})
    # nova's node addresses (its my_ip) came into the spec after labs were recorded without them
    added = frozenset({"addresses"})

    def unsupported(self, resource: Resource) -> str | None:
        if resource.name in ROLES:
            return None
        return f"no driver for service {resource.name} in this stacklab yet (shipped: {', '.join(sorted(ROLES))})"

    def _role(self, resource_id: str, name: str) -> ServiceRole:
        role = ROLES.get(name)
        if role is None:
            raise PlanError(f"no driver for service {name}", resource=resource_id)
        return role

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        plan = service_layout(resource, ctx.lab.name)
        runner = ctx.on_node_if_up(plan.controller)
        if runner is None:
            return None
        owner = marker_owner(runner, plan)
        if owner is None:
            return None
        facts = {"node": plan.controller, "address": plan.address}
        if owner != plan.lab:
            return Observed(False, {**facts, "owner": owner})
        drift = self._role(resource.id, plan.name).problems(ctx, runner, plan)
        return Observed(True, facts, tuple(drift))

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        resource = change.resource
        plan = service_layout(resource, ctx.lab.name)
        role = self._role(resource.id, plan.name)
        runner = ctx.on_node(plan.controller)
        owner = marker_owner(runner, plan)
        if owner not in (None, plan.lab):
            raise PlanError(
                f"{plan.name} on {plan.controller} belongs to {owner}",
                resource=resource.id,
                hint="stacklab never reconfigures a service another lab set up",
            )
        # The marker first: a failure half-way leaves a service `down` knows is ours.
        write_node_file(runner, plan.marker_path, plan.marker())
        ctx.progress(f"{resource.id}: on {plan.controller} ({plan.address})")
        outputs = dict(role.ensure(ctx, runner, plan))
        return {"node": plan.controller, "address": plan.address, **outputs}

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        found = recorded_spec(resource_id, recorded)
        if found is None:
            return
        raw, name = found
        plan = service_layout(Resource("service", name, raw), ctx.lab.name)
        hosts = {plan.controller, *(str(h) for h in raw.get("hosts") or ())}
        if hosts <= ctx.vanishing_nodes:  # `down`: stopping units and removing files in nodes about to go is waste
            LOG.info("%s: its nodes %s are deleted in this run; the service goes with them", resource_id,
                     ", ".join(sorted(hosts)))  # fmt: skip
            return
        runner = ctx.node_for_delete(resource_id, plan.controller, "the service goes")
        if runner is None:
            return
        owner = marker_owner(runner, plan)
        if owner is None:
            return
        if owner != plan.lab:
            LOG.warning("%s: %s on %s belongs to %s; left alone", resource_id, name, plan.controller, owner)
            return
        role = ROLES.get(name)
        if role is not None:
            role.remove(ctx, runner, plan)
        remove_node_files(runner, plan.marker_path)


@register("service")
def _factory() -> Driver:
    return ServiceDriver()
