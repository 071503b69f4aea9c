"""`openstack.neutron.external`: an external (provider) network the host can reach, resolved from a Lab, and the
checks that refuse what cannot work. Pure (model layer): checks and the neutron drivers import it.

The external network is a flat neutron network on the physical network `external`, which the controller's
linuxbridge agent maps to the controller's NIC on the named lab network (`physical_interface_mappings`); neutron's
L3 agent on the controller plugs routers' gateways into it and answers for their floating IPs there (legacy
routers: every floating IP's traffic passes the controller, so the computes need no NIC on it). Its subnet is the
lab network's cidr with the host's address on that bridge as the gateway and `pool` as the only addresses neutron
hands out, so the host reaches a floating IP on the link, with no route, and neutron never hands out an address
the host or a node already holds.

The lab network must be one of its own: the linuxbridge agent takes the controller's NIC on it into a bridge of its
own (`brq<net id>`), which the management NIC (SSH, the APIs, the VXLAN endpoint) and the storage NIC must not be.
"""

from __future__ import annotations

from collections.abc import Iterator

from stacklab.model.addressing import AddressPoolExhausted, nic_device, node_addresses
from stacklab.model.errors import Loc
from stacklab.model.lab import Lab, NeutronExternal

Problem = tuple[Loc, str, str | None]
PHYSNET = "external"  # neutron's name of the physical network the external network lives on
RESERVED_NETWORKS = ("mgmt", "storage")


def external_of(lab: Lab) -> NeutronExternal | None:
    os_ = lab.openstack
    return os_.neutron.external if os_ is not None and os_.neutron is not None else None


def controller_of(lab: Lab) -> str | None:
    assert lab.openstack is not None
    return lab.openstack.controller or next(iter(lab.nodes_with_role("controller")), None)


def node_interface(lab: Lab, node: str, network: str) -> str:
    """The kernel name of `node`'s NIC on `network` inside the node (addressing.nic_device, as plan/expand.py names
    each NIC)."""
    return nic_device(list(lab.nodes[node].nics).index(network))


def _one_of(names: object) -> str:
    return f"defined: {', '.join(sorted(names)) or 'none'}"  # type: ignore[call-overload]


def check_neutron_external(lab: Lab) -> Iterator[Problem]:
    """neutron in the services; a lab network of its own, with a NIC of the controller on it; a pool inside its
    cidr that holds neither the host's address there (the subnet's gateway) nor a node's."""
    external = external_of(lab)
    if external is None:
        return
    assert lab.openstack is not None
    loc: Loc = ("openstack", "neutron", "external")
    if "neutron" not in lab.openstack.services:
        yield (
            ("openstack", "neutron"),
            "an external network is neutron's: neutron is not in openstack.services",
            "add neutron to openstack.services, or drop openstack.neutron",
        )
    network = external.network
    if network not in lab.networks:
        yield (*loc, "network"), f"unknown network {network!r}", _one_of(lab.networks)
        return
    if network in RESERVED_NETWORKS:
        yield (
            (*loc, "network"),
            f"the external network needs a lab network of its own, not {network}: neutron's linuxbridge agent takes "
            "the controller's NIC on it into a bridge of neutron's",
            "add a network, e.g. ext: {bridge: br-ext, cidr: 10.244.30.0/24}, and give the controller a NIC on it",
        )
    yield from _check_pool(lab, external)
    controller = controller_of(lab)
    if controller in lab.nodes and network not in lab.nodes[controller].nics:
        yield (
            (*loc, "network"),
            f"the controller ({controller}) has no NIC on {network}: neutron's L3 agent there plugs routers into it",
            f"add {network} to {controller}'s nics",
        )


def _check_pool(lab: Lab, external: NeutronExternal) -> Iterator[Problem]:
    loc: Loc = ("openstack", "neutron", "external", "pool")
    net = lab.networks[external.network]
    first, last = external.pool_bounds
    cidr = net.cidr
    if first not in cidr or last not in cidr:
        yield loc, f"{external.pool} is not inside {external.network} ({cidr})", None
        return
    if first == cidr.network_address or last == cidr.broadcast_address:
        yield loc, f"{external.pool} holds the network or broadcast address of {cidr}", None
    gateway = net.gateway_address
    if first <= gateway <= last:
        yield (
            loc,
            f"{external.pool} holds the host's address on {external.network} ({gateway}), the subnet's gateway",
            "start the pool above it",
        )
    try:
        addresses = node_addresses(lab)
    except AddressPoolExhausted:
        return  # reported by the node checks
    held = sorted(
        (address, node)
        for node, nets in addresses.items()
        for name, address in nets.items()
        if name == external.network and first <= address <= last
    )
    for address, node in held:
        yield (
            loc,
            f"{external.pool} holds {node}'s address on {external.network} ({address})",
            "`auto` addresses are handed out from .10 up: start the pool above the nodes' addresses",
        )
