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

from collections.abc import Mapping
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import (
    ServiceLayout,
    dropin_text,
    file_problems,
    service_secrets,
    unit_problems,
    uwsgi_exec_start,
    version_list_answers,
    wait_for_api,
)
from stacklab.drivers.openstack.infra import AMQP_PORT, RABBIT_SECRET, RABBIT_USER, ensure_database
from stacklab.drivers.openstack.keystone import (
    authtoken_section,
    credentials_section,
    register_in_keystone,
    retire_service,
)
from stacklab.exec.node_files import enable_and_restart, require_node, write_node_file, write_unit_files
from stacklab.exec.runner import Runner

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


def api_url(plan: ServiceLayout) -> str:
    return f"http://{plan.address}:{PORT}"


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


def api_answers(runner: Runner, plan: ServiceLayout) -> bool:
    return version_list_answers(runner, api_url(plan))


class Neutron:
    name = "neutron"

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        secrets = service_secrets(ctx, SECRETS, create=False)
        if secrets is None:
            return [f"the lab's neutron secrets are missing from {ctx.state_dir / 'secrets'}"]
        files = {CONF: render_conf(plan, *secrets), **{path: render_dropin(plan, u) for u, path in DROPINS.items()}}
        answers = lambda: api_answers(runner, plan)  # noqa: E731
        found = file_problems(runner, files)
        found += unit_problems(runner, "neutron-api", url=api_url(plan), answers=answers)
        return found + unit_problems(runner, "neutron-rpc-server")

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        rid = f"service/{self.name}"
        require_node(runner, plan.controller, rid, files={"/usr/bin/neutron-api": "neutron-server",
                     "/usr/bin/neutron-rpc-server": "neutron-server"}, unit="neutron-api")  # fmt: skip
        db_password, rabbit_password, user_password = service_secrets(ctx, SECRETS, create=True) or ("", "", "")
        ctx.progress(f"{rid}: database, keystone user and endpoints")
        ensure_database(runner, "neutron", "neutron", db_password)
        register_in_keystone(ctx, runner, plan, user="neutron", password=user_password, service=SERVICE,
                             url=api_url(plan))  # fmt: skip
        changed = write_node_file(runner, CONF, render_conf(plan, db_password, rabbit_password, user_password),
                                  mode="0640")  # fmt: skip
        runner.run(["chown", "root:neutron", CONF], timeout=30)
        ctx.progress(f"{rid}: neutron-db-manage upgrade heads")
        runner.run(["runuser", "-u", "neutron", "--", "neutron-db-manage", *CONFIG_ARGS.split(), "upgrade", "heads"],
                   timeout=MANAGE_TIMEOUT)  # fmt: skip
        dropins = {path: render_dropin(plan, unit) for unit, path in DROPINS.items()}
        changed = write_unit_files(runner, dropins) or changed
        for unit in UNITS:
            enable_and_restart(runner, unit, changed=changed)
        wait_for_api(runner, rid, url=api_url(plan), unit="neutron-api", log_file="/var/log/neutron/neutron-api.log",
                     answers=lambda: api_answers(runner, plan))  # fmt: skip
        return {"url": api_url(plan), "ml2": {"type_drivers": ["flat", "vxlan"], "tenant_network_types": ["vxlan"],
                "vni_range": VNI_RANGE}}  # fmt: skip

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        retire_service(ctx, runner, plan, units=UNITS, user="neutron", user_secret=USER_SECRET, service=SERVICE,
                       url=api_url(plan), files=(*DROPINS.values(), CONF))  # fmt: skip


ROLE = Neutron()
