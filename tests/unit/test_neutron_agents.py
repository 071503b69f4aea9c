"""Neutron's agents (drivers/openstack/neutron_agents.py), the network guest's initramfs (suites/guest_initrd.py
--net) and the `network` suite's readings of a guest console (suites/test_network.py)."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import neutron_agents as agents
from stacklab.drivers.openstack.common import ServiceLayout, service_layout
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult
from stacklab.model.errors import LabError
from stacklab.model.load import load_lab_text
from stacklab.suites import guest_initrd
from stacklab.suites.test_network import first_after, last_count, lease, net_lines, pings, reported
from tests.unit.lab_util import os_lab, service_resource
from tests.unit.test_services import FakeController, ok

LAB = os_lab(
    "netlab",
    """\
nodes:
  ctl1: {image: os, nics: {mgmt: {address: 10.250.0.10}}, roles: [controller]}
  cmp1: {image: os, nics: {mgmt: {address: 10.250.0.31}}, roles: [compute]}
  cmp2: {image: os, nics: {mgmt: {address: 10.250.0.32}}, roles: [compute]}
openstack:
  services: [mariadb, rabbitmq, memcached, keystone, glance, placement, neutron, nova]
""",
)


def layout() -> ServiceLayout:
    resource = service_resource(load_lab_text(LAB, "netlab.yml"), "neutron")
    return service_layout(resource, "netlab")


def test_neutron_runs_on_the_controller_and_every_compute_with_their_mgmt_addresses() -> None:
    resource = service_resource(load_lab_text(LAB, "netlab.yml"), "neutron")
    assert resource.spec["hosts"] == ["ctl1", "cmp1", "cmp2"]
    assert resource.spec["addresses"] == {"ctl1": "10.250.0.10", "cmp1": "10.250.0.31", "cmp2": "10.250.0.32"}
    assert {"node/cmp1", "node/cmp2"} <= set(resource.deps)


def test_agent_files_vxlan_from_each_node_and_the_metadata_secret_only_on_the_controller() -> None:
    plan = layout()
    controller = agents.render_agent_conf(plan, "ctl1", "RABBIT", "METASECRET")
    compute = agents.render_agent_conf(plan, "cmp2", "RABBIT", "METASECRET")
    assert "local_ip = 10.250.0.10\n" in controller and "local_ip = 10.250.0.32\n" in compute
    assert "metadata_proxy_shared_secret = METASECRET\n" in controller and "METASECRET" not in compute
    assert "nova_metadata_host = 10.250.0.10\n" in controller and "interface_driver = linuxbridge\n" in controller
    for text in (controller, compute):
        assert "firewall_driver = iptables\n" in text and "l2_population = true\n" in text
        assert "transport_url = rabbit://openstack:RABBIT@10.250.0.10:5672/\n" in text
    assert agents.agents_of(plan, "ctl1") == agents.CONTROLLER_AGENTS
    assert agents.agents_of(plan, "cmp1") == ("neutron-linuxbridge-agent",)
    dropin = agents.render_agent_dropin(plan, "neutron-dhcp-agent")
    # stacklab's file after the package's neutron.conf, whose interface_driver (openvswitch) it overrides
    assert ("--config-file /etc/neutron/neutron.conf --config-file /etc/neutron/agent.conf.d/50-stacklab.conf"
            in dropin)  # fmt: skip


class AgentNode(FakeController):
    """A node of the lab; the controller's keystone tool lists the agents that run on every node."""

    peers: dict[str, AgentNode]

    def respond(self, argv: tuple[str, ...], stdin: str | None) -> CommandResult:
        if argv[0] == "python3" and stdin is not None and "get" in json.loads(stdin):
            running = [(host, unit) for host, node in self.peers.items() for unit in node.running]
            listed = [{"host": host, "agent_type": agents.AGENT_TYPES[unit], "alive": True}
                      for host, unit in running if unit in agents.AGENT_TYPES]  # fmt: skip
            return ok(json.dumps({"body": json.dumps({"agents": listed})}) + "\n")
        if argv[0] == "test" and argv[-1].startswith("/usr/bin/neutron-"):
            return ok()
        return super().respond(argv, stdin)


def agent_ctx(
    tmp_path: Path, lab_text: str, nodes: Mapping[str, AgentNode], *, peers: Sequence[str] = ()
) -> DriverContext:
    """The driver's context over fake nodes `nodes` (each reaching `peers`, default every node) with the lab's keystone
    admin secret in the state dir, as `up` leaves it before neutron's agents."""
    for node in nodes.values():
        node.peers = {name: nodes[name] for name in (peers or nodes)}
    (tmp_path / "state/secrets").mkdir(parents=True)
    (tmp_path / "state/secrets/keystone-admin").write_text("ADMIN\n")
    return DriverContext(lab=load_lab_text(lab_text, "netlab.yml"), runner=nodes["ctl1"], state_dir=tmp_path / "state",
                         node_runner=nodes.__getitem__)  # fmt: skip


def test_agents_up_observe_and_down_on_every_node(tmp_path: Path) -> None:
    nodes = {name: AgentNode() for name in ("ctl1", "cmp1", "cmp2")}
    ctx = agent_ctx(tmp_path, LAB, nodes)
    plan = layout()
    agents.ensure(ctx, nodes["ctl1"], plan)
    assert set(agents.CONTROLLER_AGENTS) <= nodes["ctl1"].running & nodes["ctl1"].enabled
    assert nodes["cmp2"].running == {"neutron-linuxbridge-agent"}
    secret = (tmp_path / "state/secrets" / agents.METADATA_SECRET).read_text().strip()
    assert secret and secret in nodes["ctl1"].files[agents.AGENT_CONF]
    assert not any(secret in " ".join(call) for n in nodes.values() for call in n.calls), "a secret on argv"
    assert all(secret not in n.files[agents.AGENT_CONF] for n in (nodes["cmp1"], nodes["cmp2"]))
    assert agents.problems(ctx, nodes["ctl1"], plan) == []
    nodes["cmp1"].running.discard("neutron-linuxbridge-agent")
    assert agents.problems(ctx, nodes["ctl1"], plan) == ["neutron-linuxbridge-agent is not running on cmp1"]
    restarts = list(nodes["ctl1"].restarts)
    agents.ensure(ctx, nodes["ctl1"], plan)  # again: only the stopped agent starts, nothing else restarts
    assert nodes["ctl1"].restarts == restarts and "neutron-linuxbridge-agent" in nodes["cmp1"].running
    agents.remove(ctx, nodes["ctl1"], plan)
    for node in nodes.values():
        assert not node.running and not any(p.startswith(("/etc/neutron", "/etc/systemd")) for p in node.files)


def test_agents_that_never_report_fail_up_naming_them(tmp_path: Path) -> None:
    nodes = {name: AgentNode() for name in ("ctl1", "cmp1", "cmp2")}
    ctx = agent_ctx(tmp_path, LAB, nodes, peers=["ctl1"])  # the computes' agents never reach the server
    with pytest.raises(Exception, match="missing Linux bridge agent on cmp1, Linux bridge agent on cmp2"):
        agents.wait_for_agents(ctx, nodes["ctl1"], layout(), budget=0.01)


def test_network_suite_needs_two_computes() -> None:
    one = LAB.replace("  cmp2: {image: os, nics: {mgmt: {address: 10.250.0.32}}, roles: [compute]}\n", "")
    with pytest.raises(LabError, match="suite network needs two compute nodes"):
        load_lab_text(one + "verify:\n  suites: [network]\n", "one.yml")
    load_lab_text(LAB + "verify:\n  suites: [network]\n", "two.yml")
    containers = LAB.replace(
        "{image: os, nics: {mgmt: {address: 10.250.0.31}}",
        "{kind: container, image: os, nics: {mgmt: {address: 10.250.0.31}}",
    )
    with pytest.raises(LabError, match="on cmp1: container computes need /dev/net/tun"):
        load_lab_text(containers + "verify:\n  suites: [network]\n", "tun.yml")


def test_only_the_net_guest_starts_its_network_script() -> None:
    assert guest_initrd.NET_HOOK in guest_initrd.INIT
    assert "/net.sh" not in guest_initrd.INIT
    assert "virtio_net" not in guest_initrd.WANTED and guest_initrd.NET_MODULES == ("virtio_net",)
    # the peers and the marker come from the user-data lines the suite writes
    assert "stacklab-peer=*" in guest_initrd.NET and "stacklab-marker=*" in guest_initrd.NET


CONSOLE = """\
stacklab-guest: booted 1234
stacklab-net: dhcp eth0 mac fa:16:3e:00:00:01 address 192.168.77.10 netmask 255.255.255.0
stacklab-net: metadata uuid 6f1c2e0a-aaaa-bbbb-cccc-0123456789ab
stacklab-net: metadata marker abc123
stacklab-net: ping 192.168.77.11 fail 1
stacklab-net: ping 192.168.77.11 ok 2
stacklab-net: ping 192.168.77.11 ok 3
stacklab-net: ping 192.168.77.11 fail 4
"""


def test_the_suite_reads_lease_metadata_and_pings_from_the_console() -> None:
    lines = net_lines(CONSOLE)
    assert lease(lines) == ("fa:16:3e:00:00:01", "192.168.77.10")
    assert reported(lines, "uuid") == "6f1c2e0a-aaaa-bbbb-cccc-0123456789ab" and reported(lines, "marker") == "abc123"
    assert pings(lines, "192.168.77.11") == [("fail", 1), ("ok", 2), ("ok", 3), ("fail", 4)]
    assert last_count(lines, "192.168.77.11") == 4 and last_count(lines, "192.168.77.12") == 0
    assert first_after(lines, "192.168.77.11", 0, "ok") == 2
    assert first_after(lines, "192.168.77.11", 2, "fail") == 4
    assert first_after(lines, "192.168.77.11", 4, "ok") is None
    assert lease(net_lines("stacklab-net: no DHCP answer on eth0 (fa:16:3e:00:00:01) yet")) is None


class _Metadata(http.server.BaseHTTPRequestHandler):
    """169.254.169.254 as the DHCP namespace's proxy answers: JSON metadata and the user-data, CRLF headers."""

    pages = {
        "/openstack/latest/meta_data.json": b'{"uuid": "6f1c2e0a-aaaa-bbbb-cccc-0123456789ab", "name": "g"}',
        "/openstack/latest/user_data": b"stacklab-marker=abc123\nstacklab-peer=192.168.77.11\n",
    }

    def do_GET(self) -> None:
        body = self.pages.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *_: object) -> None:
        return None


def test_the_net_guest_reads_its_metadata_over_http(tmp_path: Path) -> None:
    """The guest's own bash code (NET's metadata part), pointed at a local server instead of 169.254.169.254."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        net = guest_initrd.NET
        part = net[net.index("get() {") : net.index("i=0\nwhile true")]
        part = part.replace("/dev/tcp/169.254.169.254/80", f"/dev/tcp/127.0.0.1/{server.server_port}")
        part = part.replace("/tmp/", f"{tmp_path}/")
        script = 'say() { echo "stacklab-net: $*"; }\n' + part + 'echo "peers:$peers"\n'
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True).stdout
    finally:
        server.shutdown()
    lines = net_lines(out)
    assert reported(lines, "uuid") == "6f1c2e0a-aaaa-bbbb-cccc-0123456789ab", out
    assert reported(lines, "marker") == "abc123", out
    assert "peers: 192.168.77.11" in out


def test_agents_in_a_vm_node_get_the_longer_first_report_budget(tmp_path: Path) -> None:
    # A VM compute's agent starts its privsep daemons through rootwrap under TCG: 5-8 minutes to its first report.
    def budget(lab_text: str) -> float:
        ctx = DriverContext(lab=load_lab_text(lab_text, "netlab.yml"), runner=FakeRunner(), state_dir=tmp_path)
        return agents.agents_budget(ctx, layout())

    assert budget(LAB) == agents.AGENTS_BUDGET
    vm_compute = LAB.replace("cmp2: {image: os,", "cmp2: {kind: vm, image: os,")
    assert budget(vm_compute) == agents.VM_AGENTS_BUDGET > agents.AGENTS_BUDGET


def test_agents_on_a_vm_node_run_rootwrap_with_the_fast_import_env_kept_by_sudo(tmp_path: Path) -> None:
    """On a VM compute the agent's unit sets rootwrap_env's variables and sudo keeps them for the neutron user, so
    `sudo neutron-rootwrap ... privsep-helper` skips pkg_resources and dnspython; container nodes are unchanged."""
    vm_lab = LAB.replace("cmp2: {image: os,", "cmp2: {kind: vm, image: os,")
    nodes = {name: AgentNode() for name in ("ctl1", "cmp1", "cmp2")}
    ctx = agent_ctx(tmp_path, vm_lab, nodes)
    plan = layout()
    agents.ensure(ctx, nodes["ctl1"], plan)
    vm, dropin = nodes["cmp2"], agents.dropin_path(agents.L2_AGENT)
    assert vm.files[dropin].endswith('Environment="SETUPTOOLS_USE_DISTUTILS=stdlib" "EVENTLET_NO_GREENDNS=yes"\n')
    assert vm.files[dropin].index("[Service]") < vm.files[dropin].index("Environment=")
    assert agents.SUDOERS == "/etc/sudoers.d/stacklab-neutron-rootwrap"
    assert vm.files[agents.SUDOERS].splitlines()[1] == (
        'Defaults:neutron env_keep += "SETUPTOOLS_USE_DISTUTILS EVENTLET_NO_GREENDNS"'
    )
    install = next(c for c in vm.calls if c[0] == "install" and c[-1] == agents.SUDOERS)
    assert install[install.index("-m") + 1] == "0440"  # sudo ignores a drop-in others can write
    restart = ("systemctl", "restart", agents.L2_AGENT)
    assert vm.calls.index(install) < vm.calls.index(restart), "the agent started before sudo kept the variables"
    for name in ("ctl1", "cmp1"):  # container nodes: no Environment, no sudoers drop-in
        assert agents.SUDOERS not in nodes[name].files and "Environment=" not in nodes[name].files[dropin]
    assert agents.problems(ctx, nodes["ctl1"], plan) == []
    vm.files[agents.SUDOERS] = "# edited\n"
    assert agents.problems(ctx, nodes["ctl1"], plan) == [f"{agents.SUDOERS} on cmp2 differs from the plan"]
    agents.remove(ctx, nodes["ctl1"], plan)
    assert agents.SUDOERS not in vm.files
