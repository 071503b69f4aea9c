"""Role driver for OpenStack and what it needs (resource kind "service", `service/<name>`): one role per service.

The lab file lists services (`openstack.services`); expand gives each a resource that depends on its nodes, on
the services it needs (keystone on mariadb and memcached...) and, for cinder/glance/nova, on the storage. Roles
live in their own modules (svc_infra: mariadb, rabbitmq, memcached; svc_keystone) and register here; a service
without a role is *pending* in the plan (`unsupported()`), never faked.

Every role runs on the controller node over SSH, renders its configuration with pure functions (golden-tested),
writes it only when it changed, (re)starts the Debian package's systemd unit, and observes by reading the files
back and asking the unit, so a second `up` plans nothing. Ownership: a marker file per service on the node
(`/etc/stacklab/services/<name>.json`) names the lab; a service marked by another lab is never touched.
Secrets (database and RabbitMQ passwords, the keystone admin password) are generated per lab, mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from stacklab.drivers.base import BaseDriver, Driver, DriverContext, register
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.node_files import read_node_file, remove_node_files, unit_active, write_node_file
from stacklab.exec.readiness import ReadinessTimeout, wait_until
from stacklab.exec.runner import Runner
from stacklab.plan.resource import Change, Observed, Resource
from stacklab.secrets import get_or_create_secret, read_secret

LOG = logging.getLogger(__name__)

MARKER_DIR = "/etc/stacklab/services"


@dataclass(frozen=True)
class ServicePlan:
    """What a role needs from the resource: where it runs and what it is told."""

    lab: str
    name: str
    controller: str
    address: str  # the controller's br-mgmt address: APIs, database, message queue and cache listen there
    hosts: tuple[str, ...]
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def marker_path(self) -> str:
        return f"{MARKER_DIR}/{self.name}.json"

    def marker(self) -> str:
        return json.dumps({"lab": self.lab, "service": self.name}, sort_keys=True) + "\n"


def plan_service(resource: Resource, lab: str) -> ServicePlan:
    spec = resource.spec
    return ServicePlan(
        lab=lab,
        name=resource.name,
        controller=str(spec["controller"]),
        address=str(spec["address"]),
        hosts=tuple(str(h) for h in spec.get("hosts", ())),
        config=dict(spec.get("config") or {}),
    )


class ServiceRole(Protocol):
    name: str

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServicePlan) -> list[str]:
        """Read-only: how the running service differs from the plan (empty: as planned)."""
        ...

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServicePlan) -> Mapping[str, Any]:
        """Make the service match the plan (idempotent); its outputs."""
        ...

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServicePlan) -> None:
        """Stop it and remove what ensure() wrote (absent parts are fine)."""
        ...


ROLES: dict[str, ServiceRole] = {}
API_BUDGET = 120.0
API_POLL = 2.0


def wait_for_api(
    runner: Runner, rid: str, *, url: str, unit: str, log_file: str, answers: Callable[[], bool],
    budget: float = API_BUDGET,
) -> None:  # fmt: skip
    """Until `answers()`; fails at once, quoting the service's log, when its unit has failed (no use waiting)."""

    def failure(state: str) -> StackLabError:
        log = runner.run(["tail", "-n", "25", log_file], timeout=15, check=False).stdout
        journal = runner.run(["journalctl", "-u", unit, "-n", "15", "--no-pager", "-o", "cat"], timeout=30,
                             check=False).stdout  # fmt: skip
        hint = f"end of {log_file}:\n{log[-1500:]}\njournal:\n{journal[-1500:]}"
        return StackLabError(f"{unit} {state}", resource=rid, hint=hint)

    def ready() -> bool:
        if answers():
            return True
        if runner.run(["systemctl", "is-failed", "--quiet", unit], timeout=30, check=False).ok:
            raise failure("failed")
        return False

    try:
        wait_until(ready, budget=budget, interval=API_POLL, what=f"{unit} to answer on {url}", resource=rid)
    except ReadinessTimeout:
        raise failure(f"does not answer on {url} after {budget:g}s") from None


def register_role(role: ServiceRole) -> ServiceRole:
    ROLES[role.name] = role
    return role


def _import_roles() -> None:
    # the role modules register themselves; imported here so that the driver always knows every shipped role
    from stacklab.drivers.openstack import (  # noqa: F401
        cinder,
        glance,
        infra,
        keystone,
        neutron,
        nova,
        placement,
        swift,
    )


def file_problems(runner: Runner, files: Mapping[str, str], where: str = "") -> list[str]:
    """The files (path -> wanted text) that differ on the node, by sha256 in one command."""
    result = runner.run(["sha256sum", *files], timeout=30, check=False)
    shas = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines() if len(line.split()) == 2}
    suffix = f" on {where}" if where else ""
    return [
        f"{path}{suffix} differs from the plan"
        for path, text in files.items()
        if shas.get(path) != hashlib.sha256(text.encode()).hexdigest()
    ]


def unit_problems(runner: Runner, unit: str, *, url: str = "", answers: Callable[[], bool] | None = None) -> list[str]:
    """The unit is not running, or (when `answers` is given) its API does not answer on `url`."""
    if not unit_active(runner, unit):
        return [f"{unit} is not running"]
    if answers is not None and not answers():
        return [f"{unit} does not answer on {url}"]
    return []


def version_list_answers(runner: Runner, url: str) -> bool:
    """An OpenStack API answers GET / with its version list (200, or 300 Multiple Choices) once it serves."""
    result = runner.run(["curl", "-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}", url], timeout=15,
                        check=False)  # fmt: skip
    return result.stdout.strip() in ("200", "300")


def uwsgi_exec_start(
    address: str, port: int, wsgi_file: str, log_file: str, *, processes: int = 1, threads: int = 2, pyargv: str = ""
) -> str:
    """The command line of an OpenStack API under uwsgi on `address:port`. --die-on-term: SIGTERM (systemd's default
    stop signal) ends it at once; short mercies: the APIs keep no state of their own."""
    argv = [
        "/usr/bin/uwsgi_python3",
        f"--http-socket {address}:{port}",
        f"--wsgi-file {wsgi_file}",
        f"--master --processes {processes} --threads {threads} --enable-threads --lazy-apps --die-on-term",
        "--worker-reload-mercy 3 --reload-mercy 3 --buffer-size 65535",
        f"--add-header 'Connection: close' --logto {log_file}",
    ]
    return " ".join([*argv, f'--pyargv "{pyargv}"'] if pyargv else argv)


def service_secrets(ctx: DriverContext, names: tuple[str, ...], *, create: bool) -> tuple[str, ...] | None:
    """The lab's secrets `names`: made when missing with `create`, else only read (observe never makes secrets);
    None when one is missing."""
    if create:
        return tuple(get_or_create_secret(ctx.state_dir, name) for name in names)
    found = [read_secret(ctx.state_dir, name) for name in names]
    return None if any(f is None for f in found) else tuple(str(f) for f in found)


def marker_owner(runner: Runner, plan: ServicePlan) -> str | None:
    """The lab named by the service's marker on the node, or None when there is none."""
    text = read_node_file(runner, plan.marker_path)
    if text is None:
        return None
    try:
        return str(json.loads(text).get("lab"))
    except ValueError:
        return "(unreadable marker)"


class ServiceDriver(BaseDriver):
    """OpenStack services and their infrastructure on the controller; every spec change is applied in place."""

    kind = "service"
    updatable = frozenset({"release", "hosts", "controller", "address", "config"})

    def __init__(self) -> None:
        _import_roles()

    def unsupported(self, resource: Resource) -> str | None:
        if resource.name in ROLES:
            return None
        return f"no driver for service {resource.name} in this stacklab yet (shipped: {', '.join(sorted(ROLES))})"

    def _role(self, resource_id: str, name: str) -> ServiceRole:
        role = ROLES.get(name)
        if role is None:
            raise PlanError(f"no driver for service {name}", resource=resource_id)
        return role

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        plan = plan_service(resource, ctx.lab.name)
        runner = ctx.on_node_if_up(plan.controller)
        if runner is None:
            return None
        owner = marker_owner(runner, plan)
        if owner is None:
            return None
        facts = {"node": plan.controller, "address": plan.address}
        if owner != plan.lab:
            return Observed(False, {**facts, "owner": owner})
        drift = self._role(resource.id, plan.name).problems(ctx, runner, plan)
        return Observed(True, facts, tuple(drift))

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        resource = change.resource
        plan = plan_service(resource, ctx.lab.name)
        role = self._role(resource.id, plan.name)
        runner = ctx.on_node(plan.controller)
        owner = marker_owner(runner, plan)
        if owner not in (None, plan.lab):
            raise PlanError(
                f"{plan.name} on {plan.controller} belongs to {owner}",
                resource=resource.id,
                hint="stacklab never reconfigures a service another lab set up",
            )
        # The marker first: a failure half-way leaves a service `down` knows is ours.
        write_node_file(runner, plan.marker_path, plan.marker())
        ctx.progress(f"{resource.id}: on {plan.controller} ({plan.address})")
        outputs = dict(role.ensure(ctx, runner, plan))
        return {"node": plan.controller, "address": plan.address, **outputs}

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        raw = recorded.get("spec")
        if not raw:
            LOG.info("%s: nothing recorded to delete", resource_id)
            return
        name = resource_id.partition("/")[2]
        plan = plan_service(Resource("service", name, raw), ctx.lab.name)
        runner = ctx.on_node_if_up(plan.controller)
        if runner is None:
            LOG.warning("%s: node %s is not up; the service goes with the node", resource_id, plan.controller)
            return
        owner = marker_owner(runner, plan)
        if owner is None:
            return
        if owner != plan.lab:
            LOG.warning("%s: %s on %s belongs to %s; left alone", resource_id, name, plan.controller, owner)
            return
        role = ROLES.get(name)
        if role is not None:
            role.remove(ctx, runner, plan)
        remove_node_files(runner, plan.marker_path)


@register("service")
def _factory() -> Driver:
    return ServiceDriver()
