"""The `node` resource: one contract for every node kind, routed to the container or VM driver by spec kind."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from stacklab.drivers.base import BaseDriver, Driver, DriverContext, register
from stacklab.errors import PlanError
from stacklab.plan.resource import Change, Observed, Resource

# spec kind -> (module, class); imported lazily so a host without libvirt bindings can still run containers.
IMPLEMENTATIONS = {
    "container": ("stacklab.drivers.nodes.container", "ContainerDriver"),
    "vm": ("stacklab.drivers.nodes.vm", "VmDriver"),
}


def _impl(kind: str) -> Driver:
    try:
        module_name, class_name = IMPLEMENTATIONS[kind]
    except KeyError:
        raise PlanError(f"unknown node kind {kind!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PlanError(f"{kind} nodes are not available: {exc}", hint="run `stacklab doctor`") from None
    driver: Driver = getattr(module, class_name)()
    return driver


class NodeDriver(BaseDriver):
    kind = "node"

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        return _impl(str(resource.spec["kind"])).observe(resource, ctx)

    def diff(self, resource: Resource, observed: Observed | None, recorded: Mapping[str, Any] | None) -> Change:
        return _impl(str(resource.spec["kind"])).diff(resource, observed, recorded)

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        return _impl(str(change.resource.spec["kind"])).apply(change, ctx)

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        kind = str(recorded.get("spec", {}).get("kind", "container"))
        _impl(kind).delete(resource_id, recorded, ctx)


@register("node")
def _factory() -> Driver:
    return NodeDriver()
