"""Heat (orchestration, Zed from Debian's packages) on the controller: heat-api under uwsgi and one heat-engine.

The service that proves the declared-service house (docs/architecture.md, "adding a service"): this module and
one row in model/services.py are all it took. Configuration: the package's /etc/heat/heat.conf stays as shipped;
stacklab's settings are `/etc/heat/heat.conf.d/50-stacklab.conf`, given after it on both command lines (heat-api's
WSGI entry parses the arguments uwsgi hands it, like neutron's). The API listens on the controller's br-mgmt
address with one process; heat-engine runs one worker (the package starts one per CPU). Stacks are created with
keystone trusts (heat's default `deferred_auth_method`), for which heat logs in as its own user (`[trustee]`).
No stack-user domain: the lab's templates create no in-guest users (heat logs that it runs without one).
`up` waits until `GET /` on the API answers; observe checks both units.
"""

from __future__ import annotations

from stacklab.drivers.openstack.common import ServiceLayout, dropin_text, uwsgi_exec_start
from stacklab.drivers.openstack.declared import ApiService, DeclaredRole
from stacklab.drivers.openstack.infra import AMQP_PORT, RABBIT_SECRET, RABBIT_USER
from stacklab.drivers.openstack.keystone import PORT as KEYSTONE_PORT
from stacklab.drivers.openstack.keystone import authtoken_section

PACKAGE_CONF = "/etc/heat/heat.conf"
CONF = "/etc/heat/heat.conf.d/50-stacklab.conf"
UNITS = ("heat-api", "heat-engine")
DROPINS = {unit: f"/etc/systemd/system/{unit}.service.d/stacklab.conf" for unit in UNITS}
CONFIG_ARGS = f"--config-file {PACKAGE_CONF} --config-file {CONF}"
LOG_FILE = "/var/log/heat/heat-api.log"
PORT = 8004
CFN_PORT = 8000  # the CloudFormation-compatible API: not run here; heat still wants its URL for wait conditions
SECRETS = ("heat-db", RABBIT_SECRET, "heat-keystone")
SERVICE = {"name": "heat", "type": "orchestration", "description": "OpenStack Orchestration"}


def render_conf(plan: ServiceLayout, db_password: str, rabbit_password: str, user_password: str) -> str:
    keystone = f"http://{plan.address}:{KEYSTONE_PORT}"
    return (
        f"# written by stacklab for lab {plan.lab}\n"
        "[DEFAULT]\n"
        f"transport_url = rabbit://{RABBIT_USER}:{rabbit_password}@{plan.address}:{AMQP_PORT}/\n"
        "num_engine_workers = 1\n"
        f"heat_metadata_server_url = http://{plan.address}:{CFN_PORT}\n"
        f"heat_waitcondition_server_url = http://{plan.address}:{CFN_PORT}/v1/waitcondition\n"
        "[database]\n"
        f"connection = mysql+pymysql://heat:{db_password}@{plan.address}/heat\n"
        f"{authtoken_section(plan, 'heat', user_password)}"
        # heat acts for a stack's owner later (updates, deletes) through a trust the owner gives heat's user. No
        # project here: the trust is the token's scope, and keystoneauth refuses a project and a trust together.
        "[trustee]\n"
        "auth_type = password\n"
        f"auth_url = {keystone}\n"
        "user_domain_name = Default\n"
        "username = heat\n"
        f"password = {user_password}\n"
        "[clients_keystone]\n"
        f"auth_uri = {keystone}\n"
        "[heat_api]\n"
        f"bind_host = {plan.address}\n"
        f"bind_port = {PORT}\n"
        "[oslo_messaging_notifications]\n"
        "driver = noop\n"
        "[oslo_concurrency]\n"
        "lock_path = /var/lock/heat\n"
    )


def render_dropin(plan: ServiceLayout, unit: str) -> str:
    if unit == "heat-api":
        exec_start = uwsgi_exec_start(plan.address, PORT, "/usr/bin/heat-wsgi-api", LOG_FILE, pyargv=CONFIG_ARGS)
        return dropin_text(plan.lab, "heat API on the management network, one process", exec_start, quick_stop=True)
    exec_start = f"/usr/bin/heat-engine {CONFIG_ARGS} --log-file /var/log/heat/heat-engine.log"
    return dropin_text(plan.lab, "heat-engine with stacklab's settings", exec_start)


SERVICE_RECORD = ApiService(
    name="heat",
    units=UNITS,
    port=PORT,
    conf=CONF,
    dropins=DROPINS,
    log_file=LOG_FILE,
    catalog=SERVICE,
    sync=("heat-manage", *CONFIG_ARGS.split(), "db_sync"),
    binaries={
        "/usr/bin/heat-wsgi-api": "heat-common",
        "/usr/bin/heat-api": "heat-api",
        "/usr/bin/heat-engine": "heat-engine",
    },
    render_conf=render_conf,
    render_dropin=render_dropin,
    secrets=SECRETS,
    endpoint_path="/v1/%(tenant_id)s",
)
ROLE = DeclaredRole(SERVICE_RECORD)
