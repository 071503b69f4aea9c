"""Placement (Zed, from Debian's `placement-api` package) on the controller: the inventory and allocation API that
nova's scheduler and computes use.

Configuration: the package's placement.conf stays as shipped; stacklab's settings are
`/etc/placement/placement.conf.d/50-stacklab.conf`, which oslo.config reads after it (the WSGI app and
placement-manage both parse with project "placement" and no explicit file list, so the default config dir is read;
the package's init script sets no OS_PLACEMENT_CONFIG_DIR, which would turn that off). The API runs under uwsgi
from the package's `placement-api.service`, bound to the controller's br-mgmt address with one process instead of
the package's 8x32 threads. `placement-manage db sync`, the `placement` keystone user and endpoints, then the unit;
`up` waits until `GET /` answers.
"""

from __future__ import annotations

from stacklab.drivers.openstack.common import (
    ServiceLayout,
    dropin_text,
    uwsgi_exec_start,
)
from stacklab.drivers.openstack.declared import ApiService, DeclaredRole
from stacklab.drivers.openstack.keystone import authtoken_section

UNIT = "placement-api"
CONF = "/etc/placement/placement.conf.d/50-stacklab.conf"
DROPIN = f"/etc/systemd/system/{UNIT}.service.d/stacklab.conf"
LOG_FILE = "/var/log/placement/placement-api.log"
PORT = 8778
SERVICE = {"name": "placement", "type": "placement", "description": "OpenStack Placement"}


def render_conf(plan: ServiceLayout, db_password: str, user_password: str) -> str:
    return (
        f"# written by stacklab for lab {plan.lab}\n"
        "[api]\n"
        "auth_strategy = keystone\n"
        "[placement_database]\n"
        f"connection = mysql+pymysql://placement:{db_password}@{plan.address}/placement\n"
        f"{authtoken_section(plan, 'placement', user_password)}"
    )


def render_dropin(plan: ServiceLayout) -> str:
    exec_start = uwsgi_exec_start(plan.address, PORT, "/usr/bin/placement-api", LOG_FILE)
    return dropin_text(plan.lab, "placement API on the management network, one process", exec_start, quick_stop=True)


SERVICE_RECORD = ApiService(
    name="placement",
    units=(UNIT,),
    port=PORT,
    conf=CONF,
    dropins={UNIT: DROPIN},
    log_file=LOG_FILE,
    catalog=SERVICE,
    sync=("placement-manage", "db", "sync"),
    binaries={"/usr/bin/placement-api": "placement-api"},
    render_conf=render_conf,
    render_dropin=lambda layout, _unit: render_dropin(layout),
)
ROLE = DeclaredRole(SERVICE_RECORD)
