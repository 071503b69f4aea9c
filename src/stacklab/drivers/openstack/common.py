"""What every OpenStack role shares: the layout of a `service/<name>` resource (where it runs and what it is told),
the role interface, the ownership marker, and the checks and waits all roles use (files by sha256, units, API
answers, uwsgi command lines, the lab's secrets).

Roles live in their own modules (infra: mariadb, rabbitmq, memcached; keystone, glance, placement, neutron,
cinder, nova, swift) and import this module only; roles.py is the table of them and services.py the driver.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from stacklab.drivers.base import DriverContext
from stacklab.errors import StackLabError
from stacklab.exec.node_files import read_node_file, unit_active
from stacklab.exec.readiness import ReadinessTimeout, wait_until
from stacklab.exec.runner import Runner
from stacklab.plan.resource import Resource
from stacklab.secrets import get_or_create_secret, read_secret

LOG = logging.getLogger(__name__)

MARKER_DIR = "/etc/stacklab/services"


@dataclass(frozen=True)
class ServiceLayout:
    """What a role needs from the resource: where it runs and what it is told."""

    lab: str
    name: str
    controller: str
    address: str  # the controller's br-mgmt address: APIs, database, message queue and cache listen there
    hosts: tuple[str, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    addresses: Mapping[str, str] = field(default_factory=dict)  # node -> its br-mgmt address (nova's hosts)

    @property
    def marker_path(self) -> str:
        return f"{MARKER_DIR}/{self.name}.json"

    def marker(self) -> str:
        return json.dumps({"lab": self.lab, "service": self.name}, sort_keys=True) + "\n"


def service_layout(resource: Resource, lab: str) -> ServiceLayout:
    spec = resource.spec
    return ServiceLayout(
        lab=lab,
        name=resource.name,
        controller=str(spec["controller"]),
        address=str(spec["address"]),
        hosts=tuple(str(h) for h in spec.get("hosts", ())),
        config=dict(spec.get("config") or {}),
        addresses={str(k): str(v) for k, v in (spec.get("addresses") or {}).items()},
    )


class ServiceRole(Protocol):
    name: str

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        """Read-only: how the running service differs from the plan (empty: as planned)."""
        ...

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        """Make the service match the plan (idempotent); its outputs."""
        ...

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        """Stop it and remove what ensure() wrote (absent parts are fine)."""
        ...


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


def dropin_text(lab: str, what: str, exec_start: str, *, environment: str = "", quick_stop: bool = False) -> str:
    """A systemd drop-in that replaces the package unit's ExecStart (and optionally sets one Environment= line).

    `quick_stop`: TimeoutStopSec=5. The APIs under uwsgi --die-on-term exit at once on SIGTERM (systemd's
    default) and keep no state of their own, so a hung worker is killed after 5 s rather than the package's 15+.
    """
    env = f'Environment="{environment}"\n' if environment else ""
    stop = "TimeoutStopSec=5\n" if quick_stop else ""
    return f"# written by stacklab for lab {lab}: {what}\n[Service]\n{env}{stop}ExecStart=\nExecStart={exec_start}\n"


def service_secrets(ctx: DriverContext, names: tuple[str, ...], *, create: bool) -> tuple[str, ...] | None:
    """The lab's secrets `names`: made when missing with `create`, else only read (observe never makes secrets);
    None when one is missing."""
    if create:
        return tuple(get_or_create_secret(ctx.state_dir, name) for name in names)
    found = [read_secret(ctx.state_dir, name) for name in names]
    return None if any(f is None for f in found) else tuple(str(f) for f in found)


def marker_owner(runner: Runner, plan: ServiceLayout) -> str | None:
    """The lab named by the service's marker on the node, or None when there is none."""
    text = read_node_file(runner, plan.marker_path)
    if text is None:
        return None
    try:
        return str(json.loads(text).get("lab"))
    except ValueError:
        return "(unreadable marker)"
