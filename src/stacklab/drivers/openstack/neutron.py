"""Neutron (Zed, from Debian's packages) on the controller: the API (neutron-api) and its RPC server with the ML2
plugin, the network service nova needs to build, rebuild and evacuate instances.

Debian splits the old neutron-server in two units: `neutron-api` (uwsgi) and `neutron-rpc-server`. Their init
scripts pass `--config-dir server.conf.d` *before* neutron.conf and the plugin's ini, so anything neutron.conf sets
(its SQLite `[database]` among them) would override a conf.d file: the drop-ins give both processes stacklab's
settings file explicitly, last. The API runs under uwsgi on the controller's br-mgmt address with one process.

ML2: flat and VXLAN type drivers, VXLAN project networks (VNIs 1-1000), the package's Open vSwitch and
l2population mechanism drivers. No L2/L3/DHCP agents run in this lab yet: networks, subnets and ports are real API
and database objects (addresses and VNIs allocated by neutron), but ports do not bind to a host, and nova's
instances boot without NICs. `up` waits until the API answers; observe checks both units.
"""

from __future__ import annotations

from typing import Any

from stacklab.drivers.openstack.common import (
    ServiceLayout,
    dropin_text,
    uwsgi_exec_start,
)
from stacklab.drivers.openstack.declared import ApiService, DeclaredRole
from stacklab.drivers.openstack.infra import AMQP_PORT, RABBIT_SECRET, RABBIT_USER
from stacklab.drivers.openstack.keystone import (
    authtoken_section,
    credentials_section,
)

PACKAGE_CONF = "/etc/neutron/neutron.conf"
ML2_CONF = "/etc/neutron/plugins/ml2/ml2_conf.ini"
CONF = "/etc/neutron/server.conf.d/50-stacklab.conf"
UNITS = ("neutron-api", "neutron-rpc-server")
DROPINS = {unit: f"/etc/systemd/system/{unit}.service.d/stacklab.conf" for unit in UNITS}
CONFIG_ARGS = f"--config-file {PACKAGE_CONF} --config-file {ML2_CONF} --config-file {CONF}"
PORT = 9696
DB_SECRET = "neutron-db"
USER_SECRET = "neutron-keystone"
SECRETS = (DB_SECRET, RABBIT_SECRET, USER_SECRET)
MANAGE_TIMEOUT = 900.0
VNI_RANGE = "1:1000"
SERVICE = {"name": "neutron", "type": "network", "description": "OpenStack Networking"}


def render_conf(plan: ServiceLayout, db_password: str, rabbit_password: str, user_password: str) -> str:
    return (
        f"# written by stacklab for lab {plan.lab}\n"
        "[DEFAULT]\n"
        "core_plugin = ml2\n"
        # routers, metering and QoS need agents that this lab does not run yet
        "service_plugins =\n"
        "auth_strategy = keystone\n"
        f"transport_url = rabbit://{RABBIT_USER}:{rabbit_password}@{plan.address}:{AMQP_PORT}/\n"
        "api_paste_config = /etc/neutron/api-paste.ini\n"
        "rpc_workers = 1\n"
        "rpc_state_report_workers = 1\n"
        # nothing to tell nova about until nova runs
        "notify_nova_on_port_status_changes = false\n"
        "notify_nova_on_port_data_changes = false\n"
        "[database]\n"
        f"connection = mysql+pymysql://neutron:{db_password}@{plan.address}/neutron\n"
        f"{authtoken_section(plan, 'neutron', user_password)}"
        # network and segment changes are reported to nova and placement as neutron's own user
        f"{credentials_section(plan, 'nova', 'neutron', user_password)}"
        f"{credentials_section(plan, 'placement', 'neutron', user_password)}"
        "[oslo_concurrency]\n"
        "lock_path = /var/lib/neutron/tmp\n"
        "[ml2]\n"
        "type_drivers = flat,vxlan\n"
        "tenant_network_types = vxlan\n"
        "mechanism_drivers = openvswitch,l2population\n"
        "extension_drivers = port_security\n"
        "[ml2_type_vxlan]\n"
        f"vni_ranges = {VNI_RANGE}\n"
    )


def render_dropin(plan: ServiceLayout, unit: str) -> str:
    """The unit's ExecStart with neutron.conf, the ML2 ini and stacklab's file, in that order."""
    if unit == "neutron-api":
        log = "/var/log/neutron/neutron-api.log"
        exec_start = uwsgi_exec_start(plan.address, PORT, "/usr/bin/neutron-api", log, pyargv=CONFIG_ARGS)
        return dropin_text(plan.lab, "neutron API on the management network, one process", exec_start, quick_stop=True)
    exec_start = " ".join([f"/usr/bin/{unit}", CONFIG_ARGS, f"--log-file /var/log/neutron/{unit}.log"])
    return dropin_text(plan.lab, f"{unit} with stacklab's settings", exec_start)


def outputs(_layout: ServiceLayout) -> dict[str, Any]:
    return {"ml2": {"type_drivers": ["flat", "vxlan"], "tenant_network_types": ["vxlan"], "vni_range": VNI_RANGE}}


SERVICE_RECORD = ApiService(
    name="neutron",
    units=UNITS,
    port=PORT,
    conf=CONF,
    dropins=DROPINS,
    log_file="/var/log/neutron/neutron-api.log",
    catalog=SERVICE,
    sync=("neutron-db-manage", *CONFIG_ARGS.split(), "upgrade", "heads"),
    binaries={"/usr/bin/neutron-api": "neutron-server", "/usr/bin/neutron-rpc-server": "neutron-server"},
    render_conf=render_conf,
    render_dropin=render_dropin,
    secrets=SECRETS,
    outputs=outputs,
    sync_progress="neutron-db-manage upgrade heads",
    sync_timeout=MANAGE_TIMEOUT,
)
ROLE = DeclaredRole(SERVICE_RECORD)
