"""Neutron's Open vSwitch agent on the computes the lab makes VMs (their kernel, Debian's cloud kernel, has the
openvswitch module; the host's kernel, which containers share, has none).

On such a node `openvswitch-switch` (ovsdb-server and ovs-vswitchd, Debian 12's Open vSwitch 3.1) runs first, then
`neutron-openvswitch-agent`, which makes br-int (the ports of the node's guests) and br-tun (one VXLAN port per
peer node, unicast to its br-mgmt address, learned through l2population like the linuxbridge agents do). The image
installs both packages with their units disabled at boot (images/openstack-zed.yml, `services: disabled`): in a
container the switch cannot start without the module and would leave systemd `degraded`.

An OVS node and a linuxbridge node share a VXLAN network only if both send to the same UDP port: the linuxbridge
agent makes its `vxlan-<VNI>` interfaces without a port, so the kernel's default 8472 (not IANA's 4789, the OVS
agent's default), and the OVS agent is told 8472 (changing the linuxbridge side would change every container
lab's files).

Security groups: `firewall_driver = openvswitch`, the OVS agent's native firewall (OpenFlow rules with the
kernel's conntrack through the datapath's ct() action) rather than `iptables_hybrid`: no per-port qbr bridge and
veth pair between the tap and br-int (nova plugs the tap into br-int itself), no br_netfilter, and the anti-spoofing
rules are flows on br-int the suite can read (table 71 matches each allowed MAC of a port's ofport).
"""

from __future__ import annotations

from stacklab.drivers.openstack.common import ServiceLayout

OVS_AGENT = "neutron-openvswitch-agent"
SWITCH = "openvswitch-switch"  # pulls in ovsdb-server.service and ovs-vswitchd.service
# what runs: `openvswitch-switch` is a oneshot that stays "active" when ovs-vswitchd has died
DAEMONS = ("ovsdb-server", "ovs-vswitchd")
AGENT_TYPE = "Open vSwitch agent"
MECHANISM_DRIVER = "openvswitch"
FIREWALL_DRIVER = "openvswitch"
VXLAN_UDP_PORT = 8472  # the Linux kernel's default, which the linuxbridge agents' vxlan-<VNI> interfaces use
INTEGRATION_BRIDGE, TUNNEL_BRIDGE = "br-int", "br-tun"
# ovsdb transactions of the agent and of nova's os-vif: neutron's default 10 s, tight for a VM node under TCG on a
# loaded 2-core host
OVSDB_TIMEOUT = 60


def ovs_hosts(plan: ServiceLayout) -> tuple[str, ...]:
    """The nodes that run the OVS agent (expand records the VM computes in the spec; absent: none)."""
    return tuple(str(h) for h in plan.config.get("ovs_hosts", ()))


def runs_ovs(plan: ServiceLayout, node: str) -> bool:
    return node in ovs_hosts(plan)


def agent_sections(local_ip: str) -> str:
    """The OVS agent's sections of the node's agent file (after its [DEFAULT])."""
    return (
        "[agent]\n"
        # one root helper process per agent, not a sudo + rootwrap start for each of its commands
        "root_helper_daemon = sudo neutron-rootwrap-daemon /etc/neutron/rootwrap.conf\n"
        "tunnel_types = vxlan\n"
        f"vxlan_udp_port = {VXLAN_UDP_PORT}\n"
        "l2_population = true\n"
        "[ovs]\n"
        f"integration_bridge = {INTEGRATION_BRIDGE}\n"
        f"tunnel_bridge = {TUNNEL_BRIDGE}\n"
        f"local_ip = {local_ip}\n"
        f"ovsdb_timeout = {OVSDB_TIMEOUT}\n"
        # no provider network on a compute: the external network (if any) lives on the controller's bridge
        "bridge_mappings =\n"
        "[securitygroup]\n"
        "enable_security_group = true\n"
        f"firewall_driver = {FIREWALL_DRIVER}\n"
        "[oslo_concurrency]\n"
        "lock_path = /var/lib/neutron/tmp\n"
    )


def outputs(plan: ServiceLayout) -> dict[str, object]:
    """What the suites read about the OVS nodes (absent in a lab with none, whose outputs stay as they were)."""
    hosts = ovs_hosts(plan)
    if not hosts:
        return {}
    return {"openvswitch": {"hosts": list(hosts), "firewall_driver": FIREWALL_DRIVER,
                            "vxlan_udp_port": VXLAN_UDP_PORT, "integration_bridge": INTEGRATION_BRIDGE,
                            "tunnel_bridge": TUNNEL_BRIDGE}}  # fmt: skip
