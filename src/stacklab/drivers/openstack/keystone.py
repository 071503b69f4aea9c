"""Keystone (identity, Zed from Debian's packages) on the controller: MariaDB-backed, fernet tokens, memcached.

Configuration: the package's /etc/keystone/keystone.conf stays as shipped; stacklab's settings are a second file
(`keystone.conf.d/50-stacklab.conf`, read after it) given explicitly to keystone-manage and to the API (through
OS_KEYSTONE_CONFIG_FILES). The API runs under uwsgi from the package's `keystone.service`, whose ExecStart a
drop-in replaces: bound to the br-mgmt address only, and 2 processes instead of the package's 8x32 threads, which
a lab node cannot spare. Then `db_sync`, `fernet_setup`/`credential_setup` (both keep existing keys) and
`bootstrap` (admin user, project, role, region and the identity endpoints; idempotent, resets the admin
password to the lab's), then the `service` role, which bootstrap does not make: service users hold it next to
admin, and a token of such a user sent along as a service token (`[service_user]`) is what cinder requires before
it lets nova delete an in-use attachment (CVE-2023-2088). The admin password reaches keystone-manage on stdin;
`/root/admin-openrc` (0600) holds the credentials for the suites and for people who `stacklab ssh` into the
controller.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from importlib import resources
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import ServiceLayout, dropin_text, file_problems, unit_problems, wait_for_api
from stacklab.drivers.openstack.db_seed import seeded_sync
from stacklab.drivers.openstack.infra import MEMCACHED_PORT, drop_database, ensure_database
from stacklab.errors import StackLabError
from stacklab.exec.node_files import (
    enable_and_restart,
    remove_node_files,
    require_node,
    systemctl,
    unit_active,
    write_node_file,
    write_unit_files,
)
from stacklab.exec.runner import Runner
from stacklab.secrets import get_or_create_secret, read_secret

PACKAGE_CONF = "/etc/keystone/keystone.conf"
_TOOL_UPLOAD = threading.Lock()
CONF = "/etc/keystone/keystone.conf.d/50-stacklab.conf"
DROPIN = "/etc/systemd/system/keystone.service.d/stacklab.conf"
OPENRC = "/root/admin-openrc"
PORT = 5000
REGION = "RegionOne"
SERVICE_ROLE = "service"
SERVICE_USER_ROLES = ("admin", SERVICE_ROLE)
# Swift's keystoneauth lets holders of this role act on any account (setting account quotas); tempest's dynamic
# credentials assign it for the quota tests, so it must exist even though no lab user holds it
RESELLER_ADMIN_ROLE = "ResellerAdmin"
DB_SECRET = "keystone-db"
ADMIN_SECRET = "keystone-admin"
MANAGE_TIMEOUT = 600.0


def auth_url(plan: ServiceLayout) -> str:
    return f"http://{plan.address}:{PORT}/v3"


def render_conf(plan: ServiceLayout, db_password: str) -> str:
    return (
        f"# written by stacklab for lab {plan.lab}\n"
        "[database]\n"
        f"connection = mysql+pymysql://keystone:{db_password}@{plan.address}/keystone\n"
        "[token]\n"
        "provider = fernet\n"
        "[cache]\n"
        "enabled = true\n"
        "backend = oslo_cache.memcache_pool\n"
        f"memcache_servers = {plan.address}:{MEMCACHED_PORT}\n"
    )


def credentials_section(plan: ServiceLayout, section: str, user: str, password: str) -> str:
    """A keystoneauth password section: how a service logs in to call another one (its [nova], [placement]...)."""
    return (
        f"[{section}]\n"
        f"auth_url = http://{plan.address}:{PORT}\n"
        "auth_type = password\n"
        "project_domain_name = Default\n"
        "user_domain_name = Default\n"
        "project_name = service\n"
        f"username = {user}\n"
        f"password = {password}\n"
        f"region_name = {REGION}\n"
    )


def authtoken_section(plan: ServiceLayout, user: str, password: str) -> str:
    """keystonemiddleware's section for a service's API: its keystone user, tokens cached in the lab's memcached; a
    service token is honoured only when its user has the `service` role (keystonemiddleware's advice; the default
    accepts any valid token as one)."""
    return credentials_section(plan, "keystone_authtoken", user, password) + (
        f"www_authenticate_uri = http://{plan.address}:{PORT}\nmemcached_servers = {plan.address}:{MEMCACHED_PORT}\n"
        f"service_token_roles = {SERVICE_ROLE}\nservice_token_roles_required = true\n"
    )


def service_user_section(plan: ServiceLayout, user: str, password: str) -> str:
    """`[service_user]`: the service sends its own token (user `user`, role `service`) as X-Service-Token beside
    the user's on every call to another service, as the OpenStack docs require since CVE-2023-2088 (without it
    cinder refuses nova's detach of an in-use volume: ConflictNovaUsingAttachment, HTTP 409)."""
    return credentials_section(plan, "service_user", user, password) + "send_service_user_token = true\n"


def render_dropin(plan: ServiceLayout) -> str:
    argv = [
        "/usr/bin/uwsgi_python3",
        f"--http-socket {plan.address}:{PORT}",
        "--wsgi-file /usr/bin/keystone-wsgi-public",
        "--master --processes 2 --threads 1 --lazy-apps --die-on-term --worker-reload-mercy 3 --reload-mercy 3",
        "--buffer-size 65535 --add-header 'Connection: close'",
        "--logto /var/log/keystone/keystone-api.log",
    ]
    # Stopping: under --die-on-term uwsgi's master exits on SIGTERM (systemd's default) and takes SIGQUIT as a
    # brutal *reload* (uwsgi's master.c swaps the two), so no KillSignal here.
    what, env = "keystone API on the management network, 2 workers", f"OS_KEYSTONE_CONFIG_FILES={PACKAGE_CONF};{CONF}"
    return dropin_text(plan.lab, what, " ".join(argv), environment=env, quick_stop=True)


def render_openrc(plan: ServiceLayout, admin_password: str) -> str:
    return (
        f"# keystone admin of lab {plan.lab}, written by stacklab\n"
        "export OS_USERNAME=admin\n"
        f"export OS_PASSWORD={admin_password}\n"
        "export OS_PROJECT_NAME=admin\n"
        "export OS_USER_DOMAIN_NAME=Default\n"
        "export OS_PROJECT_DOMAIN_NAME=Default\n"
        f"export OS_AUTH_URL={auth_url(plan)}\n"
        "export OS_IDENTITY_API_VERSION=3\n"
        f"export OS_REGION_NAME={REGION}\n"
    )


def manage(runner: Runner, *args: str, as_root: bool = False) -> None:
    """keystone-manage with both config files; as the keystone user unless `as_root` (its logs stay keystone's)."""
    argv = ["keystone-manage", "--config-file", PACKAGE_CONF, "--config-file", CONF, *args]
    runner.run(argv if as_root else ["runuser", "-u", "keystone", "--", *argv], timeout=MANAGE_TIMEOUT)


def bootstrap_argv(plan: ServiceLayout) -> list[str]:
    """The admin password is read from stdin into OS_BOOTSTRAP_PASSWORD (never in argv)."""
    url = auth_url(plan)
    return [
        "sh",
        "-c",
        'IFS= read -r OS_BOOTSTRAP_PASSWORD && export OS_BOOTSTRAP_PASSWORD && exec "$@"',
        "bootstrap",
        "keystone-manage",
        "--config-file",
        PACKAGE_CONF,
        "--config-file",
        CONF,
        "bootstrap",
        "--bootstrap-admin-url",
        url,
        "--bootstrap-internal-url",
        url,
        "--bootstrap-public-url",
        url,
        "--bootstrap-region-id",
        REGION,
    ]


def api_answers(runner: Runner, plan: ServiceLayout) -> bool:
    return runner.run(["curl", "-sf", "-o", "/dev/null", "-m", "5", auth_url(plan)], timeout=15, check=False).ok


TOOL_PATH = "/usr/local/lib/stacklab/keystone_tool.py"


def register_in_keystone(
    ctx: DriverContext,
    runner: Runner,
    plan: ServiceLayout,
    *,
    user: str,
    password: str,
    service: Mapping[str, str],
    url: str,
    remove: bool = False,
) -> list[str]:
    """Create (or with `remove`, delete) a service user with the admin and service roles on the `service` project,
    and the service's catalog entry with its public/internal/admin endpoints at `url`; what changed."""
    request = {
        "region": REGION,
        "user": user,
        "password": password,
        "project": "service",
        "roles": list(SERVICE_USER_ROLES),
        "service": dict(service),
        "endpoints": {interface: url for interface in ("public", "internal", "admin")},
        "remove": remove,
    }
    return list(_run_tool(ctx, runner, plan, request)["changed"])


def retire_service(
    ctx: DriverContext,
    runner: Runner,
    plan: ServiceLayout,
    *,
    units: tuple[str, ...],
    user: str,
    user_secret: str,
    service: Mapping[str, str],
    url: str,
    files: tuple[str, ...],
    databases: tuple[str, ...] = (),
) -> None:
    """Undo an API service set up with keystone: stop and disable its units (the last one first), delete its keystone
    user and catalog entry while keystone runs, remove its files and drop its databases (default: one named `user`;
    the database user is `user`) while MariaDB runs. Each step is skipped when there is nothing to undo, so `down`
    can resume."""
    for unit in reversed(units):
        systemctl(runner, "disable", "--now", unit, check=False)
    if unit_active(runner, "keystone"):
        password = read_secret(ctx.state_dir, user_secret) or ""
        register_in_keystone(ctx, runner, plan, user=user, password=password, service=service, url=url, remove=True)
    remove_node_files(runner, *files)
    systemctl(runner, "daemon-reload", check=False)
    if unit_active(runner, "mariadb"):
        for database in databases or (user,):
            drop_database(runner, database, user)


def admin_get(ctx: DriverContext, runner: Runner, plan: ServiceLayout, *, service_type: str, path: str) -> str:
    """GET `path` from the public endpoint of `service_type` as keystone's admin (from the controller); the body."""
    return str(
        _run_tool(ctx, runner, plan, {"region": REGION, "get": {"service_type": service_type, "path": path}})["body"]
    )


def _run_tool(ctx: DriverContext, runner: Runner, plan: ServiceLayout, request: Mapping[str, Any]) -> dict[str, Any]:
    """keystone_tool.py on the controller with the admin credentials added to `request` (on stdin)."""
    return run_admin_tool(ctx, runner, plan, "keystone_tool.py", request, path=TOOL_PATH, timeout=MANAGE_TIMEOUT)


def run_admin_tool(
    ctx: DriverContext,
    runner: Runner,
    plan: ServiceLayout,
    tool: str,
    request: Mapping[str, Any],
    *,
    path: str,
    timeout: float,
) -> dict[str, Any]:
    """`tool` (a script of this package) put at `path` on the node and run with `request` plus keystone's
    auth_url and admin password on stdin (never argv); its last stdout line, a JSON object. A failed run raises
    the runner's CommandError."""
    admin_password = read_secret(ctx.state_dir, ADMIN_SECRET)
    if admin_password is None:
        raise StackLabError(
            f"the keystone admin password of lab {plan.lab} is missing", resource=f"service/{plan.name}"
        )
    with _TOOL_UPLOAD:  # services register side by side; two `install`s of one path race ("File exists")
        write_node_file(runner, path, resources.files("stacklab.drivers.openstack").joinpath(tool).read_text())
    full = {**request, "auth_url": auth_url(plan), "admin_password": admin_password}
    result = runner.run(["python3", path], input=json.dumps(full), timeout=timeout)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


class Keystone:
    name = "keystone"

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        db_password = read_secret(ctx.state_dir, DB_SECRET)
        admin_password = read_secret(ctx.state_dir, ADMIN_SECRET)
        if db_password is None or admin_password is None:  # observe never makes secrets
            return [f"the lab's keystone secrets are missing from {ctx.state_dir / 'secrets'}"]
        files = {
            CONF: render_conf(plan, db_password),
            DROPIN: render_dropin(plan),
            OPENRC: render_openrc(plan, admin_password),
        }
        answers = lambda: api_answers(runner, plan)  # noqa: E731
        return [*file_problems(runner, files), *unit_problems(runner, "keystone", url=auth_url(plan), answers=answers)]

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        rid = f"service/{self.name}"
        require_node(runner, plan.controller, rid, files={"/usr/bin/keystone-manage": "keystone"}, unit="keystone")
        db_password = get_or_create_secret(ctx.state_dir, DB_SECRET)
        admin_password = get_or_create_secret(ctx.state_dir, ADMIN_SECRET)
        ctx.progress(f"{rid}: database, fernet keys, bootstrap")
        ensure_database(runner, "keystone", "keystone", db_password)
        changed = write_node_file(runner, CONF, render_conf(plan, db_password), mode="0640")
        runner.run(["chown", "root:keystone", CONF], timeout=30)
        seeded_sync(ctx, runner, ("keystone",), ["runuser", "-u", "keystone", "--", "keystone-manage", "--config-file",
                    PACKAGE_CONF, "--config-file", CONF, "db_sync"], timeout=MANAGE_TIMEOUT)  # fmt: skip
        for setup in ("fernet_setup", "credential_setup"):  # as root: they chown the key repositories to keystone
            manage(runner, setup, "--keystone-user", "keystone", "--keystone-group", "keystone", as_root=True)
        runner.run(
            ["runuser", "-u", "keystone", "--", *bootstrap_argv(plan)],
            input=admin_password + "\n",
            timeout=MANAGE_TIMEOUT,
        )
        changed = write_unit_files(runner, {DROPIN: render_dropin(plan)}) or changed
        enable_and_restart(runner, "keystone", changed=changed)
        write_node_file(runner, OPENRC, render_openrc(plan, admin_password), mode="0600")
        wait_for_api(runner, rid, url=auth_url(plan), unit="keystone", log_file="/var/log/keystone/keystone-api.log",
                     answers=lambda: api_answers(runner, plan))  # fmt: skip
        _run_tool(ctx, runner, plan, {"region": REGION, "ensure_roles": [SERVICE_ROLE, RESELLER_ADMIN_ROLE]})
        return {"auth_url": auth_url(plan), "openrc": OPENRC, "admin_secret": ADMIN_SECRET, "region": REGION,
                "service_role": SERVICE_ROLE}  # fmt: skip

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        systemctl(runner, "disable", "--now", "keystone", check=False)
        remove_node_files(runner, DROPIN, CONF, OPENRC, TOOL_PATH)
        systemctl(runner, "daemon-reload", check=False)
        if unit_active(runner, "mariadb"):
            drop_database(runner, "keystone", "keystone")


ROLE = Keystone()
