"""Neutron's agents (Zed, Debian's packages): what puts guests on networks.

- `neutron-linuxbridge-agent` on the controller and on every compute: one Linux bridge per network
  (`brq<net id>`) with the network's VXLAN interface (`vxlan-<VNI>`, unicast to the other agents' br-mgmt
  addresses, learned through the l2population mechanism driver: no multicast), and the security groups as
  iptables rules on the bridge ports (`firewall_driver = iptables`, which needs br_netfilter: bridged frames pass
  iptables). Everything it makes lives in the node's own network namespace: a container node's bridges and VXLAN
  interfaces vanish with the container, never on the host.
- `neutron-openvswitch-agent` instead on every compute the lab makes a VM (neutron_ovs.py), beside the node's
  `openvswitch-switch`: br-int and br-tun, VXLAN on the same UDP port as the linuxbridge agents', security groups
  as the native OVS firewall. The controller keeps the linuxbridge agent whatever its kind, so the DHCP (and L3)
  agents beside it keep `interface_driver = linuxbridge`.
- `neutron-dhcp-agent` on the controller: dnsmasq per network in a `qdhcp-<net id>` namespace, its port plugged
  into the network's bridge by the controller's linuxbridge agent. Isolated metadata: with no router on a subnet
  the namespace also answers 169.254.169.254 (a haproxy that hands requests to the metadata agent).
- `neutron-metadata-agent` on the controller: signs each request with the lab's metadata secret and hands it to
  nova's metadata API (nova-api-metadata, nova.py) on the controller's br-mgmt address.

Each agent runs from a drop-in of the package's unit with neutron.conf, then stacklab's agent file (0640,
root:neutron: it holds the RabbitMQ password, and the metadata secret on the controller). On a node the lab makes a
VM, the drop-ins also set rootwrap_env's variables and a sudoers drop-in keeps them for the neutron user: the
agents' `sudo neutron-rootwrap` (its privsep helpers, its rootwrap daemon) then skips eventlet's slow imports under
TCG. `ensure` waits until neutron lists every agent alive.

A lab with an external network (neutron_external.py) also runs `neutron-l3-agent` on the controller, maps the
physical network `external` to the controller's NIC on that lab network, and keeps the metadata in the DHCP
namespace on every network (`force_metadata`); once the agents report, the external network and its subnet are
made. Without one, every file is what it was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import neutron_external, neutron_ovs, rootwrap_env
from stacklab.drivers.openstack.common import ServiceLayout, file_problems, service_secrets, unit_problems
from stacklab.drivers.openstack.infra import AMQP_PORT, RABBIT_SECRET, RABBIT_USER
from stacklab.drivers.openstack.keystone import admin_get
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.node_files import (
    enable_and_restart,
    remove_node_files,
    require_node,
    systemctl,
    unit_active,
    write_node_file,
    write_unit_files,
)
from stacklab.exec.readiness import ReadinessTimeout, wait_until
from stacklab.exec.runner import Runner

PACKAGE_CONF = "/etc/neutron/neutron.conf"
AGENT_CONF = "/etc/neutron/agent.conf.d/50-stacklab.conf"
L2_AGENT = "neutron-linuxbridge-agent"
OVS_AGENT = neutron_ovs.OVS_AGENT  # on the computes the lab makes VMs
CONTROLLER_AGENTS = (L2_AGENT, "neutron-dhcp-agent", "neutron-metadata-agent")
COMPUTE_AGENTS = (L2_AGENT,)
OVS_COMPUTE_AGENTS = (OVS_AGENT,)
L3_AGENT = neutron_external.L3_AGENT  # on the controller, only with an external network
METADATA_SECRET = "neutron-metadata"  # nova's metadata API and neutron's metadata agent share it
METADATA_PORT = 8775  # nova-api-metadata on the controller
BINARIES = {f"/usr/bin/{a}": a for a in (*CONTROLLER_AGENTS, L3_AGENT, OVS_AGENT)}
AGENT_TYPES = {L2_AGENT: "Linux bridge agent", "neutron-dhcp-agent": "DHCP agent",
               "neutron-metadata-agent": "Metadata agent", L3_AGENT: "L3 agent",
               OVS_AGENT: neutron_ovs.AGENT_TYPE}  # fmt: skip
AGENTS_BUDGET = 300.0  # a loaded 2-core host: each agent's first report came 2-3 min after its start
# An agent in a VM node under TCG starts its two privsep daemons through `sudo neutron-rootwrap ... privsep-helper`
# before its first report: without rootwrap_env's variables each took 90 s there (rootwrap's and the helper's
# imports) and a VM compute's first report came after 5-8 min. The variables (node_files) are the fix; this budget
# stays as the ceiling for a loaded 2-core host.
VM_AGENTS_BUDGET = 900.0
SUDOERS = rootwrap_env.sudoers_path("neutron")
# On container nodes (the host's kernel): ebtables that deletes neutron's anti-spoofing among rules by number
# (ebtables_among.py says why); sudo's secure_path finds it before /usr/sbin/ebtables.
EBTABLES_SHIM = "/usr/local/sbin/ebtables"
EBTABLES_SHIM_MODE = "0755"


def ebtables_shim_text(lab: str) -> str:
    source = resources.files("stacklab.drivers.openstack").joinpath("ebtables_among.py").read_text()
    shebang, _, rest = source.partition("\n") if source.startswith("#!") else ("#!/usr/bin/python3", "", source)
    return f"{shebang}\n# written by stacklab for lab {lab}\n{rest}"


def is_vm(ctx: DriverContext, node: str) -> bool:
    nodes = ctx.lab.nodes
    return node in nodes and nodes[node].kind == "vm"


def agents_budget(ctx: DriverContext, plan: ServiceLayout) -> float:
    """How long `up` waits for the agents' first reports: longer when one runs in a node with a kernel of its own
    (pinned a VM, or made one by expand for the OVS agent)."""
    return VM_AGENTS_BUDGET if any(vm_node(ctx, plan, h) for h in plan.hosts) else AGENTS_BUDGET


def dropin_path(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.service.d/stacklab.conf"


def computes(plan: ServiceLayout) -> tuple[str, ...]:
    return tuple(h for h in plan.hosts if h != plan.controller)


def agents_of(plan: ServiceLayout, node: str) -> tuple[str, ...]:
    if node != plan.controller:
        return OVS_COMPUTE_AGENTS if neutron_ovs.runs_ovs(plan, node) else COMPUTE_AGENTS
    return (*CONTROLLER_AGENTS, L3_AGENT) if neutron_external.wanted(plan) else CONTROLLER_AGENTS


def local_ip(plan: ServiceLayout, node: str) -> str:
    """The node's br-mgmt address: the VXLAN tunnels' endpoint (every node has a mgmt NIC, some nothing else)."""
    return plan.addresses.get(node) or plan.address


def render_agent_conf(
    plan: ServiceLayout, node: str, rabbit_password: str, metadata_secret: str, external_interface: str = ""
) -> str:
    """The agents' file on `node`; `external_interface`: the controller's NIC on the external network's lab network
    (neutron_external.py), given for the controller only when the lab has one."""
    external = node == plan.controller and bool(external_interface)
    text = (
        f"# written by stacklab for lab {plan.lab}: neutron's agents on {node}\n"
        "[DEFAULT]\n"
        f"transport_url = rabbit://{RABBIT_USER}:{rabbit_password}@{plan.address}:{AMQP_PORT}/\n"
    )
    if neutron_ovs.runs_ovs(plan, node):  # a compute: no DHCP, metadata or external network here
        return text + neutron_ovs.agent_sections(local_ip(plan, node))
    if node == plan.controller:
        text += (
            # the DHCP agent's ports are veths the linuxbridge agent puts on the network's bridge
            "interface_driver = linuxbridge\n"
            # no router on the lab's networks: the DHCP namespace serves 169.254.169.254 (and says so by DHCP)
            "enable_isolated_metadata = true\n"
            f"nova_metadata_host = {plan.address}\n"
            f"nova_metadata_port = {METADATA_PORT}\n"
            f"metadata_proxy_shared_secret = {metadata_secret}\n"
            # 0: the agent serves the metadata proxy's socket in its own process; each worker is a fork of ~132 MiB
            # RSS, for a lab's few guests asking once at boot
            "metadata_workers = 0\n"
        )
    if external:
        text += (
            # the suites' guest routes 169.254.169.254 on-link (klibc's ipconfig ignores DHCP's classless routes):
            # the DHCP namespace keeps answering it on a network a router is plugged into, too...
            "force_metadata = true\n"
            # ...so the L3 agent's per-router metadata proxy (a haproxy in each qrouter namespace) is not needed
            "enable_metadata_proxy = false\n"
        )
    mapping = f"{neutron_external.PHYSNET}:{external_interface}" if external else ""
    return text + (
        "[agent]\n"
        # one root helper process per agent, not a sudo + rootwrap start for each of its hundreds of commands
        "root_helper_daemon = sudo neutron-rootwrap-daemon /etc/neutron/rootwrap.conf\n"
        "[experimental]\n"
        "linuxbridge = true\n"
        "[linux_bridge]\n"
        # the external network's flat physnet: the controller's NIC on that lab network joins its bridge
        f"physical_interface_mappings ={' ' + mapping if mapping else ''}\n"
        "[vxlan]\n"
        "enable_vxlan = true\n"
        f"local_ip = {local_ip(plan, node)}\n"
        "l2_population = true\n"
        "[securitygroup]\n"
        "enable_security_group = true\n"
        "firewall_driver = iptables\n"
        "[oslo_concurrency]\n"
        "lock_path = /var/lib/neutron/tmp\n"
    )


def render_agent_dropin(plan: ServiceLayout, unit: str, *, vm: bool = False) -> str:
    """The agent's ExecStart: the package's neutron.conf, then stacklab's file (Debian's init script would add the
    package's plugin ini files, whose defaults and debconf answers this lab does not use); the OVS agent also
    requires openvswitch-switch; on a VM node, rootwrap_env's variables, inherited by every `sudo neutron-rootwrap`
    the agent runs."""
    argv = [f"/usr/bin/{unit}", f"--config-file {PACKAGE_CONF}", f"--config-file {AGENT_CONF}",
            f"--log-file /var/log/neutron/{unit}.log"]  # fmt: skip
    text = f"# written by stacklab for lab {plan.lab}: {unit}\n"
    if unit == OVS_AGENT:  # the package's unit is only ordered after the switch; the agent cannot work without it
        text += f"[Unit]\nRequires={neutron_ovs.SWITCH}.service\nAfter={neutron_ovs.SWITCH}.service\n"
    text += f"[Service]\nExecStart=\nExecStart={' '.join(argv)}\n"
    return text + (rootwrap_env.environment_line() if vm else "")


def node_files(
    plan: ServiceLayout, node: str, secrets: tuple[str, str], *, vm: bool = False, external_interface: str = ""
) -> dict[str, str]:
    """Every file stacklab writes for the agents on the node (path -> text); `vm`: the lab makes the node a VM;
    `external_interface`: the controller's NIC on the external network (render_agent_conf)."""
    files = {AGENT_CONF: render_agent_conf(plan, node, *secrets, external_interface)}
    files |= {dropin_path(u): render_agent_dropin(plan, u, vm=vm) for u in agents_of(plan, node)}
    if not vm:  # a container node: the host's kernel, where ebtables-nft cannot delete an among rule by spec
        files[EBTABLES_SHIM] = ebtables_shim_text(plan.lab)
    return files | ({SUDOERS: rootwrap_env.sudoers_text(plan.lab, "neutron")} if vm else {})


def vm_node(ctx: DriverContext, plan: ServiceLayout, node: str) -> bool:
    """The node has a kernel of its own: the lab pins it a VM, or expand made it one and put the OVS agent there."""
    return is_vm(ctx, node) or neutron_ovs.runs_ovs(plan, node)


def node_units(plan: ServiceLayout, node: str) -> tuple[str, ...]:
    """The units that must run on the node: its agents, and before them Open vSwitch's daemons where it runs."""
    return (*(neutron_ovs.DAEMONS if neutron_ovs.runs_ovs(plan, node) else ()), *agents_of(plan, node))


def _secrets(ctx: DriverContext, *, create: bool) -> tuple[str, str] | None:
    found = service_secrets(ctx, (RABBIT_SECRET, METADATA_SECRET), create=create)
    return None if found is None else (found[0], found[1])


def problems(ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
    """How the agents differ from the plan on every node (read-only)."""
    secrets = _secrets(ctx, create=False)
    if secrets is None:
        return [f"the lab's neutron agent secrets are missing from {ctx.state_dir / 'secrets'}"]
    try:
        interface = _external_interface(ctx, plan)
    except PlanError:  # the lab file changed under a recorded plan: its files differ, `up` says why
        interface = ""
    found = []
    for node in plan.hosts:
        node_runner = runner if node == plan.controller else ctx.on_node_if_up(node)
        if node_runner is None:
            found.append(f"{node} is not reachable")
            continue
        where = "" if node == plan.controller else node
        files = node_files(plan, node, secrets, vm=vm_node(ctx, plan, node), external_interface=interface)
        found += file_problems(node_runner, files, where)
        found += [
            f"{p} on {node}" if where else p for u in node_units(plan, node) for p in unit_problems(node_runner, u)
        ]
    return found + neutron_external.problems(ctx, runner, plan)


def _external_interface(ctx: DriverContext, plan: ServiceLayout) -> str:
    """The controller's NIC on the external network's lab network ("" when the lab has none)."""
    external = neutron_external.resolve(ctx, plan)
    return external.interface if external else ""


def ensure(ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
    """The agents on every node, then the wait until neutron lists each one alive."""
    rid = f"service/{plan.name}"
    secrets = _secrets(ctx, create=True)
    assert secrets is not None  # made when missing
    interface = _external_interface(ctx, plan)
    for node in plan.hosts:
        ctx.progress(f"{rid}: {', '.join(agents_of(plan, node))} on {node}")
        node_runner = runner if node == plan.controller else ctx.on_node(node)
        wanted = {p: a for p, a in BINARIES.items() if a in agents_of(plan, node)}
        require_node(node_runner, node, rid, files=wanted, unit=agents_of(plan, node)[0])
        files = node_files(plan, node, secrets, vm=vm_node(ctx, plan, node), external_interface=interface)
        changed = write_node_file(node_runner, AGENT_CONF, files.pop(AGENT_CONF), mode="0640")
        node_runner.run(["chown", "root:neutron", AGENT_CONF], timeout=30)
        if changed and node == plan.controller and L3_AGENT not in agents_of(plan, node):
            # the lab no longer asks for an external network (or never did: a fresh file): no L3 agent left behind
            systemctl(node_runner, "disable", "--now", L3_AGENT, check=False)
            remove_node_files(node_runner, dropin_path(L3_AGENT))
        if EBTABLES_SHIM in files:  # before the agents (re)start: their first port's rules go through it
            shim = files.pop(EBTABLES_SHIM)
            changed = write_node_file(node_runner, EBTABLES_SHIM, shim, mode=EBTABLES_SHIM_MODE) or changed
        if SUDOERS in files:  # before the agents (re)start: their first privsep helpers need it
            sudoers = files.pop(SUDOERS)
            changed = write_node_file(node_runner, SUDOERS, sudoers, mode=rootwrap_env.SUDOERS_MODE) or changed
        changed = write_unit_files(node_runner, files) or changed
        if neutron_ovs.runs_ovs(plan, node):  # enabled only here: the image leaves it off (no module in containers)
            # the oneshot stays "active" with a daemon dead: restarted then, which starts what it Requires
            down = not all(unit_active(node_runner, d) for d in neutron_ovs.DAEMONS)
            enable_and_restart(node_runner, neutron_ovs.SWITCH, changed=down)
        for unit in agents_of(plan, node):
            enable_and_restart(node_runner, unit, changed=changed)
    ctx.progress(f"{rid}: waiting for the agents to report")
    wait_for_agents(ctx, runner, plan, budget=agents_budget(ctx, plan))
    neutron_external.ensure(ctx, runner, plan)  # the external network, once the L3 agent can serve routers on it


def alive_agents(ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> set[tuple[str, str]]:
    """(host, agent type) of every agent neutron counts alive."""
    body = admin_get(ctx, runner, plan, service_type="network", path="/v2.0/agents")
    agents = json.loads(body or "{}").get("agents", [])
    return {(str(a["host"]), str(a["agent_type"])) for a in agents if a.get("alive")}


def wanted_agents(plan: ServiceLayout) -> set[tuple[str, str]]:
    return {(node, AGENT_TYPES[unit]) for node in plan.hosts for unit in agents_of(plan, node)}


def wait_for_agents(ctx: DriverContext, runner: Runner, plan: ServiceLayout, budget: float = AGENTS_BUDGET) -> None:
    wanted = wanted_agents(plan)
    seen: set[tuple[str, str]] = set()
    last_error = ""

    def reported() -> bool:
        nonlocal seen, last_error
        try:
            seen = alive_agents(ctx, runner, plan)
        except StackLabError as exc:  # the API, busy with the agents' first reports on a loaded host, timed out
            last_error = str(exc)[-300:]
            return False
        return wanted <= seen

    try:
        wait_until(reported, budget=budget, interval=5.0, what="neutron's agents to report")
    except ReadinessTimeout:
        missing = ", ".join(f"{t} on {h}" for h, t in sorted(wanted - seen))
        error = f" (the last listing failed: {last_error})" if last_error else ""
        raise StackLabError(
            f"neutron's agents did not all report within {budget:g}s: missing {missing}{error}",
            resource=f"service/{plan.name}",
            hint="see /var/log/neutron/<agent>.log on those nodes",
        ) from None


def remove(ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
    """Stop the agents and remove their files on every reachable node."""
    for node in plan.hosts:
        node_runner = runner if node == plan.controller else ctx.on_node_if_up(node)
        if node_runner is None:
            continue
        for unit in agents_of(plan, node):
            systemctl(node_runner, "disable", "--now", unit, check=False)
        if neutron_ovs.runs_ovs(plan, node):
            systemctl(node_runner, "disable", "--now", neutron_ovs.SWITCH, *neutron_ovs.DAEMONS, check=False)
        remove_node_files(
            node_runner, AGENT_CONF, SUDOERS, EBTABLES_SHIM, *(dropin_path(u) for u in agents_of(plan, node))
        )
        systemctl(node_runner, "daemon-reload", check=False)


def outputs(plan: ServiceLayout) -> Mapping[str, object]:
    return {
        "mechanism_drivers": mechanism_drivers(plan),
        "firewall_driver": "iptables",
        "agents": {node: list(agents_of(plan, node)) for node in plan.hosts},
        "vxlan_local_ip": {node: local_ip(plan, node) for node in plan.hosts},
        "metadata": {"isolated": True, "nova_metadata": f"http://{plan.address}:{METADATA_PORT}"},
        **neutron_ovs.outputs(plan),
    }


def mechanism_drivers(plan: ServiceLayout) -> list[str]:
    """ML2's mechanism drivers: openvswitch only in a lab with an OVS node (a container lab's files stay as they
    were); l2population tells both kinds of agent where every port is, so their VXLAN tunnels meet."""
    return [*([neutron_ovs.MECHANISM_DRIVER] if neutron_ovs.ovs_hosts(plan) else []), "linuxbridge", "l2population"]
