"""The lab's external network in neutron (`openstack.neutron.external`, model/neutron_external.py): what the server,
the agents and the API get when a lab asks for one. A lab that does not ask renders exactly as before.

- neutron-server: `service_plugins = router` (routers and floating IPs) and `[ml2_type_flat] flat_networks =
  external` (neutron.py).
- the controller's agents (neutron_agents.py): `neutron-l3-agent` beside the DHCP and metadata agents (linuxbridge
  interface driver: a router's ports are veths the linuxbridge agent puts on the networks' bridges; its namespace
  `qrouter-<id>` and NAT rules live in the controller's own network namespace, like the DHCP agent's), and the
  linuxbridge agent's `physical_interface_mappings = external:<the controller's NIC on that lab network>`. The
  DHCP agent keeps serving 169.254.169.254 on every network (`force_metadata`), also those a router is plugged
  into: the suites' guest routes that address on-link (klibc's ipconfig ignores DHCP's classless routes), so the
  metadata must stay in the DHCP namespace; the L3 agent therefore runs no metadata proxy of its own.
- after the agents report: the external network (flat on `external`, `router:external`) and its subnet (the lab
  network's cidr, the host's address on that bridge as the gateway, the pool as the only allocation pool, no
  DHCP), made by neutron_external_tool.py on the controller, idempotently; observe reads them back.

`down` drops neutron's database with the service, which holds the network; the bridge goes with the lab. A lab
file that drops its external network: the next `up` stops the L3 agent and removes its drop-in (neutron_agents.py);
the network stays in neutron's database (routers and floating IPs on it are the user's) until `down`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import ServiceLayout
from stacklab.drivers.openstack.keystone import REGION, run_admin_tool
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.runner import CommandError, Runner
from stacklab.model import neutron_external as model
from stacklab.model.lab import range_bounds
from stacklab.plan.naming import owner_marker

PHYSNET = model.PHYSNET  # the physical network neutron.py's flat_networks and the agents' mapping name
NETWORK_NAME = "stacklab-external"  # tempest's floating_network_name
TOOL = "/usr/local/lib/stacklab/neutron_external_tool.py"
TOOL_TIMEOUT = 300.0
L3_AGENT = "neutron-l3-agent"


@dataclass(frozen=True)
class ExternalNetwork:
    """The external network as neutron and the controller's agents see it."""

    name: str
    lab_network: str
    cidr: str
    gateway: str  # the host's address on the lab network's bridge
    pool: tuple[str, str]
    interface: str  # the controller's NIC on the lab network, inside the controller
    marker: str  # the network's description in neutron: whose it is

    def tool_spec(self) -> dict[str, Any]:
        return {"name": self.name, "physnet": PHYSNET, "cidr": self.cidr, "gateway": self.gateway,
                "pool": list(self.pool), "marker": self.marker}  # fmt: skip


def wanted(plan: ServiceLayout) -> bool:
    """Whether the lab asks for an external network (neutron's spec carries it in `config`)."""
    return bool(plan.config.get("external"))


def resolve(ctx: DriverContext, plan: ServiceLayout) -> ExternalNetwork | None:
    """The external network of the plan, with the lab network's cidr and the host's address on it; None when the
    lab asks for none."""
    spec = plan.config.get("external") or {}
    if not spec:
        return None
    network = str(spec["network"])
    lab = ctx.lab
    if network not in lab.networks or plan.controller not in lab.nodes:
        raise PlanError(
            f"the external network's lab network {network!r} or the controller {plan.controller!r} is not in the lab",
            resource=f"service/{plan.name}",
        )
    first, last = range_bounds(str(spec["pool"]))
    net = lab.networks[network]
    return ExternalNetwork(
        name=NETWORK_NAME,
        lab_network=network,
        cidr=str(net.cidr),
        gateway=str(net.gateway_address),
        pool=(str(first), str(last)),
        interface=model.node_interface(lab, plan.controller, network),
        marker=owner_marker(plan.lab, "external-network", NETWORK_NAME),
    )


def _run_tool(ctx: DriverContext, runner: Runner, plan: ServiceLayout, action: str) -> dict[str, Any]:
    external = resolve(ctx, plan)
    assert external is not None
    request = {"region": REGION, "action": action, "network": external.tool_spec()}
    try:
        return run_admin_tool(ctx, runner, plan, "neutron_external_tool.py", request, path=TOOL, timeout=TOOL_TIMEOUT)
    except CommandError as exc:
        raise StackLabError(
            f"neutron's external network ({action}): {exc.result.stderr.strip()[-600:] or exc}",
            resource=f"service/{plan.name}",
        ) from None


def ensure(ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
    """The external network and its subnet, made or corrected (nothing when the lab asks for none)."""
    if not wanted(plan):
        return
    changed = _run_tool(ctx, runner, plan, "ensure").get("changed") or []
    if changed:
        ctx.progress(f"service/{plan.name}: external network: {'; '.join(changed)}")


def problems(ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
    """How the external network differs from the plan (read-only; nothing when the lab asks for none)."""
    if not wanted(plan):
        return []
    try:
        return [str(p) for p in _run_tool(ctx, runner, plan, "check").get("problems") or []]
    except StackLabError as exc:  # neutron's API down is drift too: `up` brings it back first
        return [f"the external network could not be read: {str(exc)[-300:]}"]


def outputs(plan: ServiceLayout) -> Mapping[str, object]:
    """The external network's name and pool (tempest's floating_network_name); nothing when the lab asks for none."""
    spec = plan.config.get("external") or {}
    if not spec:
        return {}
    first, last = range_bounds(str(spec["pool"]))
    return {"external_network": {"name": NETWORK_NAME, "physnet": PHYSNET, "lab_network": str(spec["network"]),
                                 "pool": [str(first), str(last)]}}  # fmt: skip
