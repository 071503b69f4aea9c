"""Address allocation: fixed addresses as written, `auto` ones handed out in file order from .10 upwards."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stacklab.model.lab import Lab

AUTO_START_OFFSET = 10  # leave .1-.9 for gateways and hand-placed services


def nic_device(index: int) -> str:
    """The kernel name of a node's NIC inside the node: `eth<index>` in the order of its `nics` (cloud-init and the
    container config name each NIC, matched by MAC, so)."""
    return f"eth{index}"


class AddressPoolExhausted(ValueError):
    pass


def node_addresses(lab: Lab) -> dict[str, dict[str, ipaddress.IPv4Address]]:
    """{node: {network: address}}; deterministic for a given lab file."""
    taken: dict[str, set[ipaddress.IPv4Address]] = {net: {spec.gateway_address} for net, spec in lab.networks.items()}
    result: dict[str, dict[str, ipaddress.IPv4Address]] = {name: {} for name in lab.nodes}
    for name, node in lab.nodes.items():
        for net, nic in node.nics.items():
            if nic.address != "auto" and net in taken:
                taken[net].add(nic.address)
                result[name][net] = nic.address
    for name, node in lab.nodes.items():
        for net, nic in node.nics.items():
            if nic.address == "auto" and net in lab.networks:
                result[name][net] = _next_free(lab.networks[net].cidr, taken[net], net)
    return result


def _next_free(cidr: ipaddress.IPv4Network, taken: set[ipaddress.IPv4Address], net: str) -> ipaddress.IPv4Address:
    for offset in range(AUTO_START_OFFSET, cidr.num_addresses - 1):
        candidate = cidr.network_address + offset
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    raise AddressPoolExhausted(f"network {net} ({cidr}) has no free address left for `auto`")
