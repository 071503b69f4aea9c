"""Neutron's Open vSwitch agent on VM computes (drivers/openstack/neutron_ovs.py, neutron_agents.py, neutron.py's
ML2 list, expand's `ovs_hosts`) and the network suite's readings of an OVS compute (suites/ovs_flows.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from stacklab.drivers.openstack import neutron, neutron_ovs
from stacklab.drivers.openstack import neutron_agents as agents
from stacklab.drivers.openstack.common import ServiceLayout, service_layout
from stacklab.exec.runner import CommandResult
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import USERSPACE_CHOICES
from stacklab.suites import ovs_flows
from stacklab.suites.test_network import LINUXBRIDGE_AGENT, OVS_AGENT, l2_agent_problems, ovs_spoofing_after_update
from tests.unit.lab_util import service_resource
from tests.unit.test_neutron_agents import LAB, AgentNode, agent_ctx
from tests.unit.test_services import ok

# the netlab of test_neutron_agents with cmp2 a VM node: it runs the OVS agent, cmp1 and the controller linuxbridge
OVS_LAB = LAB.replace("cmp2: {image: os,", "cmp2: {kind: vm, image: os,")


def layout(text: str = OVS_LAB, choices: Mapping[str, str] = USERSPACE_CHOICES) -> ServiceLayout:
    return service_layout(service_resource(load_lab_text(text, "netlab.yml"), "neutron", choices), "netlab")


def test_only_vm_computes_run_the_ovs_agent_and_only_they_change_the_spec() -> None:
    assert layout().config == {"ovs_hosts": ["cmp2"]}
    assert layout(LAB).config == {}, "a lab with no VM compute keeps the spec it had"
    # the controller keeps linuxbridge whatever its kind: its DHCP agent's interface driver is linuxbridge's
    vm_controller = OVS_LAB.replace("ctl1: {image: os,", "ctl1: {kind: vm, image: os,")
    assert layout(vm_controller).config == {"ovs_hosts": ["cmp2"]}
    # kind auto that the host makes a VM (KVM runs guests there) counts too
    assert layout(LAB, {**USERSPACE_CHOICES, "node_kind": "vm"}).config == {"ovs_hosts": ["cmp1", "cmp2"]}
    plan = layout()
    assert agents.agents_of(plan, "cmp2") == ("neutron-openvswitch-agent",)
    assert agents.agents_of(plan, "cmp1") == ("neutron-linuxbridge-agent",)
    assert agents.agents_of(plan, "ctl1") == agents.CONTROLLER_AGENTS


def test_the_ovs_agent_file_tunnels_vxlan_on_the_linuxbridge_agents_port_with_the_ovs_firewall() -> None:
    plan = layout()
    text = agents.render_agent_conf(plan, "cmp2", "RABBIT", "METASECRET")
    for line in ("tunnel_types = vxlan", "vxlan_udp_port = 8472", "l2_population = true", "local_ip = 10.250.0.32",
                 "integration_bridge = br-int", "tunnel_bridge = br-tun", "firewall_driver = openvswitch",
                 "transport_url = rabbit://openstack:RABBIT@10.250.0.10:5672/"):  # fmt: skip
        assert f"\n{line}\n" in text, line
    assert "METASECRET" not in text and "[vxlan]" not in text and "linuxbridge" not in text
    # the linuxbridge side makes its vxlan-<VNI> interfaces with no port: the kernel's default, the same 8472
    assert "udp_dstport" not in agents.render_agent_conf(plan, "cmp1", "RABBIT", "METASECRET")
    controller = agents.render_agent_conf(plan, "ctl1", "RABBIT", "METASECRET")
    assert "interface_driver = linuxbridge\n" in controller and "firewall_driver = iptables\n" in controller
    dropin = agents.render_agent_dropin(plan, agents.OVS_AGENT, vm=True)
    assert "Requires=openvswitch-switch.service\nAfter=openvswitch-switch.service\n" in dropin
    assert dropin.index("[Unit]") < dropin.index("[Service]") < dropin.index("Environment=")
    files = agents.node_files(plan, "cmp2", ("RABBIT", "METASECRET"), vm=True)
    assert agents.EBTABLES_SHIM not in files and agents.SUDOERS in files
    assert set(files) == {agents.AGENT_CONF, agents.dropin_path(agents.OVS_AGENT), agents.SUDOERS}


def test_ml2_loads_openvswitch_only_in_a_lab_with_an_ovs_node() -> None:
    def ml2(plan: ServiceLayout) -> str:
        text = neutron.render_conf(plan, "DB", "RABBIT", "USER")
        return next(line for line in text.splitlines() if line.startswith("mechanism_drivers"))

    assert ml2(layout()) == "mechanism_drivers = openvswitch,linuxbridge,l2population"
    assert ml2(layout(LAB)) == "mechanism_drivers = linuxbridge,l2population"
    outputs = agents.outputs(layout())
    assert outputs["mechanism_drivers"] == ["openvswitch", "linuxbridge", "l2population"]
    assert outputs["openvswitch"] == {"hosts": ["cmp2"], "firewall_driver": "openvswitch", "vxlan_udp_port": 8472,
                                      "integration_bridge": "br-int", "tunnel_bridge": "br-tun"}  # fmt: skip
    assert "openvswitch" not in agents.outputs(layout(LAB))


class OvsNode(AgentNode):
    """An agent node whose openvswitch-switch unit pulls in ovsdb-server and ovs-vswitchd (its Requires=)."""

    def systemctl(self, args: tuple[str, ...]) -> CommandResult:
        result = super().systemctl(args)
        if args[0] == "restart" and neutron_ovs.SWITCH in args:
            self.running.update(neutron_ovs.DAEMONS)
        return result


def test_ovs_up_observe_and_down_on_the_vm_compute(tmp_path: Path) -> None:
    nodes: dict[str, AgentNode] = {name: OvsNode() for name in ("ctl1", "cmp1", "cmp2")}
    ctx = agent_ctx(tmp_path, OVS_LAB, nodes)
    plan = layout()
    agents.ensure(ctx, nodes["ctl1"], plan)
    vm = nodes["cmp2"]
    assert vm.running == {"openvswitch-switch", "ovsdb-server", "ovs-vswitchd", "neutron-openvswitch-agent"}
    assert {"openvswitch-switch", "neutron-openvswitch-agent"} <= vm.enabled
    calls = vm.calls
    switch = calls.index(("systemctl", "restart", "openvswitch-switch"))
    assert switch < calls.index(("systemctl", "restart", "neutron-openvswitch-agent")), "the agent before its switch"
    for name in ("ctl1", "cmp1"):  # no Open vSwitch where the kernel has no openvswitch module
        assert not any("openvswitch" in " ".join(c) for c in nodes[name].calls), name
    assert agents.problems(ctx, nodes["ctl1"], plan) == []
    vm.running.discard("ovs-vswitchd")  # openvswitch-switch, a oneshot, stays active: the daemon is what counts
    assert agents.problems(ctx, nodes["ctl1"], plan) == ["ovs-vswitchd is not running on cmp2"]
    agents.ensure(ctx, nodes["ctl1"], plan)
    assert "ovs-vswitchd" in vm.running
    agents.remove(ctx, nodes["ctl1"], plan)
    assert not vm.running and not vm.enabled & {"openvswitch-switch", "neutron-openvswitch-agent"}
    assert not any(p.startswith(("/etc/neutron", "/etc/systemd", "/etc/sudoers.d")) for p in vm.files)


def test_an_ovs_agent_that_never_reports_fails_up_naming_it(tmp_path: Path) -> None:
    nodes = {name: OvsNode() for name in ("ctl1", "cmp1", "cmp2")}
    ctx = agent_ctx(tmp_path, OVS_LAB, nodes, peers=["ctl1", "cmp1"])  # cmp2's agent never reaches the server
    for name, units in (("ctl1", agents.CONTROLLER_AGENTS), ("cmp1", agents.COMPUTE_AGENTS)):
        nodes[name].running.update(units)
    with pytest.raises(Exception, match=r"missing Open vSwitch agent on cmp2\b"):
        agents.wait_for_agents(ctx, nodes["ctl1"], layout(), budget=0.01)


# br-int's table 71 on an OVS compute (ovs-ofctl -O OpenFlow13 --no-names dump-flows br-int table=71): port 5 with
# its own MAC and an allowed address pair, port 15 another guest's
DUMP = """\
 cookie=0x8f1c, duration=41.2s, table=71, n_packets=4, n_bytes=168, priority=95,arp,reg5=0x5,in_port=5,dl_src=fa:16:3e:0a:0b:0c,arp_spa=192.168.77.10 actions=resubmit(,94)
 cookie=0x8f1c, duration=3.1s, table=71, n_packets=0, n_bytes=0, priority=95,arp,reg5=0x5,in_port=5,dl_src=fa:16:3e:5a:1a:b0,arp_spa=192.168.77.250 actions=resubmit(,94)
 cookie=0x8f1c, duration=41.2s, table=71, n_packets=9, n_bytes=882, priority=65,ip,reg5=0x5,in_port=5,dl_src=fa:16:3e:0a:0b:0c,nw_src=192.168.77.10 actions=ct(table=72,zone=NXM_NX_REG6[0..15])
 cookie=0x8f1c, duration=41.2s, table=71, n_packets=0, n_bytes=0, priority=10,reg5=0x5,in_port=5 actions=resubmit(,93)
 cookie=0x8f1c, duration=40.0s, table=71, n_packets=2, n_bytes=84, priority=65,ip,reg5=0xf,in_port=15,dl_src=fa:16:3e:99:98:97,nw_src=192.168.77.11 actions=ct(table=72,zone=NXM_NX_REG6[0..15])
"""  # noqa: E501 - as ovs-ofctl prints it

VSCTL = json.dumps({"headings": ["name", "options"], "data": [
    ["vxlan-0afa000a", ["map", [["df_default", "true"], ["dst_port", "8472"], ["in_key", "flow"],
                                ["local_ip", "10.250.0.32"], ["out_key", "flow"], ["remote_ip", "10.250.0.10"]]]],
    ["vxlan-0afa001f", ["map", [["dst_port", "8472"], ["local_ip", "10.250.0.32"], ["remote_ip", "10.250.0.31"]]]],
]})  # fmt: skip


def test_the_suite_reads_a_ports_egress_macs_from_br_int() -> None:
    assert ovs_flows.egress_macs(DUMP, 5) == {"fa:16:3e:0a:0b:0c", "fa:16:3e:5a:1a:b0"}
    assert ovs_flows.egress_macs(DUMP, 15) == {"fa:16:3e:99:98:97"}
    assert ovs_flows.egress_macs(DUMP, 1) == frozenset(), "in_port=1 is not in_port=15"
    only_reg5 = " table=71, priority=65,ct_state=-trk,ip,reg5=0x7,dl_src=fa:16:3e:00:00:07 actions=ct(table=72)"
    assert ovs_flows.egress_macs(only_reg5, 7) == {"fa:16:3e:00:00:07"} and not ovs_flows.egress_macs(only_reg5, 0x70)
    assert ovs_flows.macs(["FA:16:3E:0:a:B"]) == {"fa:16:3e:00:0a:0b"}
    ports = ovs_flows.vxlan_ports(VSCTL)
    assert [(p["name"], p["remote_ip"], p["dst_port"]) for p in ports] == [
        ("vxlan-0afa000a", "10.250.0.10", "8472"), ("vxlan-0afa001f", "10.250.0.31", "8472")]  # fmt: skip


class OvsCompute:
    """The commands the suite runs on an OVS compute: the tap's ofport, br-int's table 71, br-tun's ports and flows."""

    def __init__(self, dump: str, ofport: str = "5") -> None:
        self.dump, self.ofport = dump, ofport

    def run(self, argv: list[str], **_: object) -> CommandResult:
        if argv[:2] == ["ovs-vsctl", "get"]:
            return ok(self.ofport + "\n") if self.ofport else ok(rc=1, stderr='no row "tapabc" in table Interface')
        if argv[:2] == ["ovs-vsctl", "--format=json"]:
            return ok(VSCTL)
        if argv[-2:] == ["br-int", "table=71"]:
            return ok(self.dump)
        if argv[-1] == "br-tun":
            return ok(
                " cookie=0x1, table=4, priority=1,tun_id=0x2a actions=push_vlan:0x8100,set_field:4097->vlan_vid\n"
            )
        raise AssertionError(f"unexpected {argv}")


def test_the_suite_proves_the_tunnel_and_the_port_update_on_an_ovs_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    compute = OvsCompute(DUMP)
    assert ovs_flows.tunnel_problems(compute, 42, "10.250.0.32", "10.250.0.31", 8472) == []  # type: ignore[arg-type]
    problems = ovs_flows.tunnel_problems(compute, 7, "10.250.0.32", "10.250.0.99", 4789)  # type: ignore[arg-type]
    assert problems[0].startswith("no VXLAN port to 10.250.0.99") and "tun_id=0x7" in problems[1]
    wrong_port = ovs_flows.tunnel_problems(compute, 42, "10.250.0.32", "10.250.0.31", 4789)  # type: ignore[arg-type]
    assert wrong_port and "dst_port 4789" in wrong_port[0]
    port = "abcdef01234-5678"
    seconds = ovs_spoofing_after_update(compute, port, {"fa:16:3e:0a:0b:0c", "fa:16:3e:5a:1a:b0"})  # type: ignore[arg-type]
    assert seconds < 1.0
    # an agent that never re-makes the flows (stopped): the suite fails naming what br-int still admits
    monkeypatch.setattr("stacklab.suites.test_network.FLIP_BUDGET", 0.01)
    stale = OvsCompute("\n".join(line for line in DUMP.splitlines() if "5a:1a:b0" not in line))
    with pytest.raises(AssertionError, match=r"admits \['fa:16:3e:0a:0b:0c'\], expected .*is neutron-openvswitch"):
        ovs_spoofing_after_update(stale, port, {"fa:16:3e:0a:0b:0c", "fa:16:3e:5a:1a:b0"})  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="tapabcdef01234 has no OpenFlow port on br-int"):
        ovs_spoofing_after_update(OvsCompute(DUMP, ofport=""), port, {"fa:16:3e:0a:0b:0c"})  # type: ignore[arg-type]


def test_the_suite_names_a_compute_whose_l2_agent_neutron_counts_dead() -> None:
    listed = [
        {"host": "ctl1", "agent_type": "Linux bridge agent", "alive": True},
        {"host": "cmp1", "agent_type": "Linux bridge agent", "alive": True},
        {"host": "cmp2", "agent_type": "Open vSwitch agent", "alive": False},
    ]
    wanted = {"cmp1": LINUXBRIDGE_AGENT, "cmp2": OVS_AGENT}
    assert l2_agent_problems(listed, wanted) == [
        "neutron counts no live Open vSwitch agent on cmp2: its guest's port cannot bind there (is "
        "neutron-openvswitch-agent running on cmp2? see /var/log/neutron/neutron-openvswitch-agent.log there)"
    ]
    assert l2_agent_problems([*listed[:2], {**listed[2], "alive": True}], wanted) == []
    # a linuxbridge agent on the OVS compute is not its agent
    assert l2_agent_problems([{"host": "cmp2", "agent_type": "Linux bridge agent", "alive": True}], {"cmp2": OVS_AGENT})
