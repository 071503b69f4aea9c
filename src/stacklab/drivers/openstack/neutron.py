"""Neutron (Zed, from Debian's packages) on the controller: neutron-server (the API and its RPC workers) with the ML2
plugin, the network service nova needs to build, rebuild and evacuate instances.

Debian splits the old neutron-server in two units: `neutron-api` (uwsgi) and `neutron-rpc-server`. stacklab runs the
one eventlet `neutron-server` (API and RPC workers in one service) in the `neutron-api` unit instead and leaves
`neutron-rpc-server` stopped: under uwsgi neutron still monkey-patches eventlet, so the ML2 plugin's green threads
(the OVO push of ports, security groups and rules to the Open vSwitch agents, the batched port events to nova) run
only while a request of that uwsgi thread waits on I/O, and a deleted rule reached the OVS agent late or never
(issue 16; neutron's LP#2077790 reports that thread stalling under uwsgi in a later release). In neutron-server's
own process the hub always runs. Debian's init scripts pass `--config-dir server.conf.d` *before* neutron.conf and
the plugin's ini, so anything neutron.conf sets (its SQLite `[database]` among them) would override a conf.d file:
the drop-in gives the server stacklab's settings file explicitly, last. The API listens on the controller's br-mgmt
address, in the server's own process (`api_workers = 0`).

ML2: flat and VXLAN type drivers, VXLAN project networks (VNIs 1-1000), the linuxbridge and l2population mechanism
drivers (openvswitch before them when a VM compute runs the Open vSwitch agent: neutron_ovs.py), and the agents
that make networks real (neutron_agents.py): the linuxbridge agent on the controller and every container compute
(VXLAN between the nodes' br-mgmt addresses, security groups as iptables rules), the OVS agent on VM computes, the
DHCP and metadata agents on the controller. Ports bind to the compute that hosts the instance, guests get their
address by DHCP and their metadata from 169.254.169.254, and neutron tells nova when a port is up (nova waits for
that event before it reports an instance ACTIVE). `up` waits until the API answers and every agent reports alive;
observe checks the server's unit (and that the package's `neutron-rpc-server` is not running beside it) and every
agent on every node.

A lab with an external network (`openstack.neutron.external`, neutron_external.py) adds the router service plugin
and the flat physical network `external`, the L3 agent on the controller and the external network itself; one
without renders exactly as before.
"""

from __future__ import annotations

from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import neutron_agents, neutron_external
from stacklab.drivers.openstack.common import (
    ServiceLayout,
    dropin_text,
)
from stacklab.drivers.openstack.declared import ApiService, DeclaredRole
from stacklab.drivers.openstack.infra import AMQP_PORT, RABBIT_SECRET, RABBIT_USER
from stacklab.drivers.openstack.keystone import (
    authtoken_section,
    credentials_section,
)
from stacklab.exec.node_files import node_path_exists, systemctl, unit_active
from stacklab.exec.runner import Runner

PACKAGE_CONF = "/etc/neutron/neutron.conf"
ML2_CONF = "/etc/neutron/plugins/ml2/ml2_conf.ini"
CONF = "/etc/neutron/server.conf.d/50-stacklab.conf"
UNITS = ("neutron-api",)  # the package's API unit, running neutron-server (see the module's docstring)
DROPINS = {unit: f"/etc/systemd/system/{unit}.service.d/stacklab.conf" for unit in UNITS}
# the package's RPC-only server: neutron-server's own RPC workers do its work; labs made before ran it
RPC_UNIT = "neutron-rpc-server"
RPC_DROPIN = f"/etc/systemd/system/{RPC_UNIT}.service.d/stacklab.conf"
CONFIG_ARGS = f"--config-file {PACKAGE_CONF} --config-file {ML2_CONF} --config-file {CONF}"
PORT = 9696
DB_SECRET = "neutron-db"
USER_SECRET = "neutron-keystone"
SECRETS = (DB_SECRET, RABBIT_SECRET, USER_SECRET)
MANAGE_TIMEOUT = 900.0
VNI_RANGE = "1:1000"
SERVICE = {"name": "neutron", "type": "network", "description": "OpenStack Networking"}


def render_conf(plan: ServiceLayout, db_password: str, rabbit_password: str, user_password: str) -> str:
    external = neutron_external.wanted(plan)
    return (
        f"# written by stacklab for lab {plan.lab}\n"
        "[DEFAULT]\n"
        "core_plugin = ml2\n"
        # routers need the L3 agent, which runs only where the lab asks for an external network; metering and QoS
        # are not deployed
        f"service_plugins ={' router' if external else ''}\n"
        "auth_strategy = keystone\n"
        f"transport_url = rabbit://{RABBIT_USER}:{rabbit_password}@{plan.address}:{AMQP_PORT}/\n"
        "api_paste_config = /etc/neutron/api-paste.ini\n"
        f"bind_host = {plan.address}\n"
        f"bind_port = {PORT}\n"
        # the API in neutron-server's own process, where the ML2 plugin and its notifier threads live
        "api_workers = 0\n"
        "rpc_workers = 1\n"
        "rpc_state_report_workers = 1\n"
        # nova waits for network-vif-plugged before it calls an instance ACTIVE
        "notify_nova_on_port_status_changes = true\n"
        "notify_nova_on_port_data_changes = true\n"
        "[database]\n"
        f"connection = mysql+pymysql://neutron:{db_password}@{plan.address}/neutron\n"
        f"{authtoken_section(plan, 'neutron', user_password)}"
        # network and segment changes are reported to nova and placement as neutron's own user
        f"{credentials_section(plan, 'nova', 'neutron', user_password)}"
        f"{credentials_section(plan, 'placement', 'neutron', user_password)}"
        "[oslo_concurrency]\n"
        "lock_path = /var/lib/neutron/tmp\n"
        # Zed marks linuxbridge experimental (its server and agent refuse it unless told): it is what works in
        # container computes, whose host kernel may lack openvswitch
        "[experimental]\n"
        "linuxbridge = true\n"
        "[ml2]\n"
        "type_drivers = flat,vxlan\n"
        "tenant_network_types = vxlan\n"
        f"mechanism_drivers = {','.join(neutron_agents.mechanism_drivers(plan))}\n"
        "extension_drivers = port_security\n"
        "[ml2_type_vxlan]\n"
        f"vni_ranges = {VNI_RANGE}\n"
        # the external network: flat, on the physical network the controller's linuxbridge agent maps to its NIC
        + (f"[ml2_type_flat]\nflat_networks = {neutron_external.PHYSNET}\n" if external else "")
    )


def render_dropin(plan: ServiceLayout, unit: str) -> str:
    """The unit's ExecStart: neutron-server with neutron.conf, the ML2 ini and stacklab's file, in that order."""
    exec_start = " ".join(["/usr/bin/neutron-server", CONFIG_ARGS, "--log-file /var/log/neutron/neutron-server.log"])
    what = "neutron-server (API on the management network, RPC workers) in the package's API unit"
    return dropin_text(plan.lab, what, exec_start)


def rpc_unit_problems(runner: Runner, _plan: ServiceLayout) -> list[str]:
    """The package's neutron-rpc-server must not run beside neutron-server (a lab made before this one did)."""
    running = unit_active(runner, RPC_UNIT)
    return [f"{RPC_UNIT} is running (neutron-server in neutron-api does its work)"] if running else []


def retire_rpc_unit(_ctx: DriverContext, runner: Runner, _plan: ServiceLayout) -> None:
    """Stop and disable the package's neutron-rpc-server and remove stacklab's old drop-in for it, if any."""
    if unit_active(runner, RPC_UNIT) or node_path_exists(runner, RPC_DROPIN):
        systemctl(runner, "disable", "--now", RPC_UNIT, check=False)
        runner.run(["rm", "-f", RPC_DROPIN], timeout=30)
        systemctl(runner, "daemon-reload")


def outputs(layout: ServiceLayout) -> dict[str, Any]:
    ml2 = {"type_drivers": ["flat", "vxlan"], "tenant_network_types": ["vxlan"], "vni_range": VNI_RANGE}
    return {"ml2": ml2, **neutron_agents.outputs(layout), **neutron_external.outputs(layout)}


SERVICE_RECORD = ApiService(
    name="neutron",
    units=UNITS,
    port=PORT,
    conf=CONF,
    dropins=DROPINS,
    log_file="/var/log/neutron/neutron-server.log",
    catalog=SERVICE,
    sync=("neutron-db-manage", *CONFIG_ARGS.split(), "upgrade", "heads"),
    binaries={"/usr/bin/neutron-server": "neutron-server"},
    render_conf=render_conf,
    render_dropin=render_dropin,
    secrets=SECRETS,
    outputs=outputs,
    sync_progress="neutron-db-manage upgrade heads",
    sync_timeout=MANAGE_TIMEOUT,
    prepare=retire_rpc_unit,
    after_start=neutron_agents.ensure,
    extra_problems=rpc_unit_problems,
)


class Neutron(DeclaredRole):
    """The declared API service, and its agents on the controller and the computes (neutron_agents.py): they start
    once the API answers (the record's after_start)."""

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        return super().problems(ctx, runner, plan) + neutron_agents.problems(ctx, runner, plan)

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        neutron_agents.remove(ctx, runner, plan)
        super().remove(ctx, runner, plan)


ROLE = Neutron(SERVICE_RECORD)
