"""What OpenStack services need on the controller: MariaDB, RabbitMQ and memcached, from Debian's packages.

Each listens on the controller's br-mgmt address (plus what the package keeps local), is configured by files
stacklab owns (a conf.d file, a config file the package does not ship, or systemd drop-ins) and runs as the
package's own systemd unit. RabbitMQ's Erlang side too: epmd (4369) and the distribution port (25672) listen on
every address by default; drop-ins put them on the management address (and loopback for epmd). `remove` stops
the unit and deletes those files; data goes with the node.

Databases and users for the services are made by `ensure_database` (SQL on stdin to the local root socket:
Debian's MariaDB authenticates root by unix socket, so no root password exists or is needed). RabbitMQ's
`openstack` user gets its password on stdin as well; passwords never appear in argv.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import ServiceLayout, file_problems, unit_problems
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
from stacklab.exec.readiness import ReadinessTimeout, wait_until
from stacklab.exec.runner import Runner
from stacklab.secrets import get_or_create_secret

MARIADB_CONF = "/etc/mysql/mariadb.conf.d/99-stacklab.cnf"
RABBITMQ_CONF = "/etc/rabbitmq/rabbitmq.conf"
RABBITMQ_DROPIN = "/etc/systemd/system/rabbitmq-server.service.d/stacklab.conf"
EPMD_DROPIN = "/etc/systemd/system/epmd.socket.d/stacklab.conf"
MEMCACHED_CONF = "/etc/stacklab/memcached.conf"
MEMCACHED_DROPIN = "/etc/systemd/system/memcached.service.d/stacklab.conf"
MEMCACHED_WRAPPER = "/usr/share/memcached/scripts/systemd-memcached-wrapper"

MYSQL_PORT = 3306
AMQP_PORT = 5672
EPMD_PORT = 4369
DIST_PORT = AMQP_PORT + 20000  # RabbitMQ's default distribution port (RABBITMQ_DIST_PORT)
MEMCACHED_PORT = 11211
RABBIT_USER = "openstack"
RABBIT_SECRET = "rabbitmq-openstack"
SQL_TIMEOUT = 60.0
# rabbitmqctl boots an Erlang VM of its own for every call: 2-5 s on an idle node, but it exceeded 60 s on a 2-core
# host with four other labs running (a timed-out set_permissions failed an `up` here)
RABBITMQCTL_TIMEOUT = 240.0
START_BUDGET = 120.0
_IDENT = re.compile(r"^[A-Za-z0-9_]+$")


def _header(plan: ServiceLayout, what: str) -> str:
    return f"# written by stacklab for lab {plan.lab}: {what}\n"


def _wait(runner: Runner, argv: list[str], what: str, budget: float = START_BUDGET) -> None:
    deadline = time.monotonic() + budget
    last = {"stderr": ""}

    def answers() -> bool:
        result = runner.run(argv, timeout=max(5.0, min(60.0, deadline - time.monotonic())), check=False)
        last["stderr"] = result.stderr
        return result.ok

    try:
        wait_until(answers, budget=budget, interval=2.0, what=what)
    except ReadinessTimeout:
        raise StackLabError(f"{what} did not come up within {budget:g}s: {last['stderr'].strip()[-500:]}") from None


def _nothing(_runner: Runner) -> None:
    return None


@dataclass(frozen=True)
class InfraService:
    """A daemon the OpenStack services need, as data: the package's one unit, a conf file stacklab owns, optional
    drop-ins, the command that answers once it serves. A step of its own is a hook (RabbitMQ's epmd and user)."""

    name: str
    unit: str
    binaries: Mapping[str, str]  # file -> package that ships it (proves the package is installed)
    conf: str
    render_conf: Callable[[ServiceLayout], str]
    dropins: Mapping[str, Callable[[ServiceLayout], str]] = field(default_factory=dict)  # path -> render
    ready: tuple[str, ...] = ()  # succeeds once the unit serves; () = the restart is enough
    outputs: Mapping[str, Any] = field(default_factory=dict)
    # Hooks; each a no-op unless given.
    dropins_changed: Callable[[Runner], None] = _nothing  # after daemon-reload, before the unit's restart
    after_start: Callable[[DriverContext, Runner], None] = lambda _ctx, _runner: None
    extra_problems: Callable[[Runner], list[str]] = lambda _runner: []  # asked only when nothing else differs
    before_stop: Callable[[Runner], None] = _nothing
    after_stop: Callable[[Runner], None] = _nothing


class InfraRole:
    """The ServiceRole of an InfraService: one walk for MariaDB, RabbitMQ and memcached."""

    def __init__(self, service: InfraService) -> None:
        self.service = service
        self.name = service.name

    def files(self, plan: ServiceLayout) -> dict[str, str]:
        svc = self.service
        return {svc.conf: svc.render_conf(plan), **{path: render(plan) for path, render in svc.dropins.items()}}

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        found = [*file_problems(runner, self.files(plan)), *unit_problems(runner, self.service.unit)]
        return found or self.service.extra_problems(runner)

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        svc = self.service
        require_node(runner, plan.controller, f"service/{self.name}", files=dict(svc.binaries), unit=svc.unit)
        changed = write_node_file(runner, svc.conf, svc.render_conf(plan))
        if write_unit_files(runner, {path: render(plan) for path, render in svc.dropins.items()}):
            svc.dropins_changed(runner)
            changed = True
        enable_and_restart(runner, svc.unit, changed=changed)
        if svc.ready:
            _wait(runner, list(svc.ready), svc.unit)
        svc.after_start(ctx, runner)
        return dict(svc.outputs)

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        svc = self.service
        svc.before_stop(runner)
        systemctl(runner, "disable", "--now", svc.unit, check=False)
        svc.after_stop(runner)
        remove_node_files(runner, svc.conf, *svc.dropins)
        if svc.dropins:
            systemctl(runner, "daemon-reload", check=False)


# --- MariaDB ------------------------------------------------------------------------------------------------


def render_mariadb_conf(plan: ServiceLayout) -> str:
    return _header(plan, "the services' database, on the management network") + (
        "[mysqld]\n"
        f"bind-address = {plan.address}\n"
        "max_connections = 500\n"
        "character-set-server = utf8mb4\n"
        "collation-server = utf8mb4_general_ci\n"
        "innodb_buffer_pool_size = 128M\n"
        "skip-name-resolve\n"
    )


def _check_ident(*values: str) -> None:
    for value in values:
        if not _IDENT.match(value):
            raise ValueError(f"not a plain SQL identifier or generated secret: {value!r}")


def database_sql(name: str, user: str, password: str) -> str:
    """Idempotent: the database, its user (from anywhere on the lab networks) with this password, its grants."""
    _check_ident(name, user, password)
    return (
        f"CREATE DATABASE IF NOT EXISTS `{name}`;\n"
        f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}';\n"
        f"ALTER USER '{user}'@'%' IDENTIFIED BY '{password}';\n"
        f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'%';\n"
        "FLUSH PRIVILEGES;\n"
    )


def ensure_database(runner: Runner, name: str, user: str, password: str) -> None:
    runner.run(
        ["mysql", "--protocol=socket", "-u", "root"], input=database_sql(name, user, password), timeout=SQL_TIMEOUT
    )


def drop_database(runner: Runner, name: str, user: str) -> None:
    _check_ident(name, user)
    sql = f"DROP DATABASE IF EXISTS `{name}`;\nDROP USER IF EXISTS '{user}'@'%';\n"
    runner.run(["mysql", "--protocol=socket", "-u", "root"], input=sql, timeout=SQL_TIMEOUT, check=False)


MARIADB = InfraRole(
    InfraService(
        name="mariadb",
        unit="mariadb",
        binaries={"/usr/sbin/mariadbd": "mariadb-server"},
        conf=MARIADB_CONF,
        render_conf=render_mariadb_conf,
        ready=("mysqladmin", "--protocol=socket", "-u", "root", "ping"),
        outputs={"port": MYSQL_PORT},
    )
)


# --- RabbitMQ -----------------------------------------------------------------------------------------------


def render_rabbitmq_conf(plan: ServiceLayout) -> str:
    return _header(plan, "AMQP for the services, on the management network") + (
        f"listeners.tcp.1 = {plan.address}:{AMQP_PORT}\n"
        "loopback_users.guest = true\n"
        "vm_memory_high_watermark.relative = 0.2\n"
    )


def _erlang_ip(address: str) -> str:
    """`172.29.236.10` -> `{172,29,236,10}`: an IPv4 address as an Erlang tuple (lab networks are IPv4)."""
    octets = address.split(".")
    if len(octets) != 4 or not all(o.isdigit() and int(o) < 256 for o in octets):
        raise ValueError(f"not an IPv4 address: {address!r}")
    return "{" + ",".join(octets) + "}"


def render_epmd_dropin(plan: ServiceLayout) -> str:
    """epmd.socket (Debian's socket-activated epmd, `ListenStream=4369`: every address) on loopback, where every
    Erlang node registers, and the management address, where `rabbitmqctl` looks up rabbit@<host> (the node's
    host name resolves to it). FreeBind: the socket may be set up before the address at boot."""
    return _header(plan, "epmd on loopback and the management address only") + (
        "[Socket]\n"
        "ListenStream=\n"
        f"ListenStream=127.0.0.1:{EPMD_PORT}\n"
        f"ListenStream={plan.address}:{EPMD_PORT}\n"
        "FreeBind=yes\n"
    )


def render_rabbitmq_dropin(plan: ServiceLayout) -> str:
    """The Erlang distribution listener (25672, default 0.0.0.0) on the management address: kernel
    inet_dist_use_interface, on the server's command line so it holds before distribution starts. ERL_EPMD_ADDRESS
    covers an epmd started by erl itself (no socket activation)."""
    erlang_ip = _erlang_ip(plan.address)
    return _header(plan, "Erlang distribution and epmd on the management address only") + (
        "[Service]\n"
        f'Environment="RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {erlang_ip}"\n'
        f"Environment=ERL_EPMD_ADDRESS=127.0.0.1,{plan.address}\n"
        f"Environment=RABBITMQ_DIST_PORT={DIST_PORT}\n"
    )


def rabbit_users(runner: Runner) -> set[str]:
    result = runner.run(
        ["rabbitmqctl", "-q", "list_users", "--no-table-headers"], timeout=RABBITMQCTL_TIMEOUT, check=False
    )
    return {line.split()[0] for line in result.stdout.splitlines() if line.split()} if result.ok else set()


def _epmd_moved(runner: Runner) -> None:
    """New epmd listen addresses: the socket is restarted with epmd and the node (registered in it) stopped."""
    systemctl(runner, "stop", "rabbitmq-server", "epmd.service", check=False)
    systemctl(runner, "restart", "epmd.socket")


def _ensure_rabbit_user(ctx: DriverContext, runner: Runner) -> None:
    password = get_or_create_secret(ctx.state_dir, RABBIT_SECRET)
    verb = "change_password" if RABBIT_USER in rabbit_users(runner) else "add_user"
    runner.run(["rabbitmqctl", "-q", verb, RABBIT_USER], input=password + "\n", timeout=RABBITMQCTL_TIMEOUT)
    runner.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", "/", RABBIT_USER, ".*", ".*", ".*"], timeout=RABBITMQCTL_TIMEOUT
    )


def _rabbit_user_problems(runner: Runner) -> list[str]:
    return [] if RABBIT_USER in rabbit_users(runner) else [f"RabbitMQ has no user {RABBIT_USER}"]


def _delete_rabbit_user(runner: Runner) -> None:
    if unit_active(runner, "rabbitmq-server"):
        runner.run(["rabbitmqctl", "-q", "delete_user", RABBIT_USER], timeout=RABBITMQCTL_TIMEOUT, check=False)


def _stop_epmd(runner: Runner) -> None:
    # epmd served only RabbitMQ here; the package's socket comes back as shipped at the next boot.
    systemctl(runner, "stop", "epmd.socket", "epmd.service", check=False)


RABBITMQ = InfraRole(
    InfraService(
        name="rabbitmq",
        unit="rabbitmq-server",
        binaries={"/usr/sbin/rabbitmqctl": "rabbitmq-server"},
        conf=RABBITMQ_CONF,
        render_conf=render_rabbitmq_conf,
        dropins={RABBITMQ_DROPIN: render_rabbitmq_dropin, EPMD_DROPIN: render_epmd_dropin},
        ready=("rabbitmqctl", "-q", "await_startup", "--timeout", "60"),
        outputs={"port": AMQP_PORT, "user": RABBIT_USER, "secret": RABBIT_SECRET},
        dropins_changed=_epmd_moved,
        after_start=_ensure_rabbit_user,
        extra_problems=_rabbit_user_problems,
        before_stop=_delete_rabbit_user,
        after_stop=_stop_epmd,
    )
)


# --- memcached ----------------------------------------------------------------------------------------------


def render_memcached_conf(plan: ServiceLayout) -> str:
    return _header(plan, "token and API cache, on the management network") + (
        f"-m 128\n-p {MEMCACHED_PORT}\n-u memcache\n-l {plan.address}\n-c 1024\n-P /var/run/memcached/memcached.pid\n"
    )


def render_memcached_dropin(plan: ServiceLayout) -> str:
    return _header(plan, "the package's unit, with stacklab's options file") + (
        f"[Service]\nExecStart=\nExecStart={MEMCACHED_WRAPPER} {MEMCACHED_CONF}\n"
    )


MEMCACHED = InfraRole(
    InfraService(
        name="memcached",
        unit="memcached",
        binaries={MEMCACHED_WRAPPER: "memcached"},
        conf=MEMCACHED_CONF,
        render_conf=render_memcached_conf,
        dropins={MEMCACHED_DROPIN: render_memcached_dropin},
        outputs={"port": MEMCACHED_PORT},
    )
)

ROLES = (MARIADB, RABBITMQ, MEMCACHED)
