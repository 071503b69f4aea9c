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

from collections.abc import Mapping
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import (
    ServiceLayout,
    file_problems,
    unit_problems,
    uwsgi_exec_start,
    version_list_answers,
    wait_for_api,
)
from stacklab.drivers.openstack.infra import ensure_database
from stacklab.drivers.openstack.keystone import authtoken_section, register_in_keystone, retire_service
from stacklab.exec.node_files import enable_and_restart, require_node, write_node_file, write_unit_files
from stacklab.exec.runner import Runner
from stacklab.secrets import get_or_create_secret, read_secret

UNIT = "placement-api"
CONF = "/etc/placement/placement.conf.d/50-stacklab.conf"
DROPIN = f"/etc/systemd/system/{UNIT}.service.d/stacklab.conf"
LOG_FILE = "/var/log/placement/placement-api.log"
PORT = 8778
DB_SECRET = "placement-db"
USER_SECRET = "placement-keystone"
MANAGE_TIMEOUT = 600.0
SERVICE = {"name": "placement", "type": "placement", "description": "OpenStack Placement"}


def api_url(plan: ServiceLayout) -> str:
    return f"http://{plan.address}:{PORT}"


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
    return (
        f"# written by stacklab for lab {plan.lab}: placement API on the management network, one process\n"
        "[Service]\n"
        # SIGTERM (systemd's default) ends uwsgi at once under --die-on-term; the API keeps no state of its own
        "TimeoutStopSec=5\n"
        "ExecStart=\n"
        f"ExecStart={uwsgi_exec_start(plan.address, PORT, '/usr/bin/placement-api', LOG_FILE)}\n"
    )


def api_answers(runner: Runner, plan: ServiceLayout) -> bool:
    return version_list_answers(runner, api_url(plan))


class Placement:
    name = "placement"

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        db_password = read_secret(ctx.state_dir, DB_SECRET)
        user_password = read_secret(ctx.state_dir, USER_SECRET)
        if db_password is None or user_password is None:
            return [f"the lab's placement secrets are missing from {ctx.state_dir / 'secrets'}"]
        files = {CONF: render_conf(plan, db_password, user_password), DROPIN: render_dropin(plan)}
        found = file_problems(runner, files)
        answers = lambda: api_answers(runner, plan)  # noqa: E731
        return [*found, *unit_problems(runner, UNIT, url=api_url(plan), answers=answers)]

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        rid = f"service/{self.name}"
        require_node(runner, plan.controller, rid, files={"/usr/bin/placement-api": "placement-api"}, unit=UNIT)
        db_password = get_or_create_secret(ctx.state_dir, DB_SECRET)
        user_password = get_or_create_secret(ctx.state_dir, USER_SECRET)
        ctx.progress(f"{rid}: database, keystone user and endpoints")
        ensure_database(runner, "placement", "placement", db_password)
        register_in_keystone(ctx, runner, plan, user="placement", password=user_password, service=SERVICE,
                             url=api_url(plan))  # fmt: skip
        changed = write_node_file(runner, CONF, render_conf(plan, db_password, user_password), mode="0640")
        runner.run(["chown", "root:placement", CONF], timeout=30)
        ctx.progress(f"{rid}: db sync")
        runner.run(["runuser", "-u", "placement", "--", "placement-manage", "db", "sync"], timeout=MANAGE_TIMEOUT)
        changed = write_unit_files(runner, {DROPIN: render_dropin(plan)}) or changed
        enable_and_restart(runner, UNIT, changed=changed)
        wait_for_api(runner, rid, url=api_url(plan), unit=UNIT, log_file=LOG_FILE,
                     answers=lambda: api_answers(runner, plan))  # fmt: skip
        return {"url": api_url(plan)}

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        retire_service(ctx, runner, plan, units=(UNIT,), user="placement", user_secret=USER_SECRET,
                       service=SERVICE, url=api_url(plan), files=(DROPIN, CONF))  # fmt: skip


ROLE = Placement()
