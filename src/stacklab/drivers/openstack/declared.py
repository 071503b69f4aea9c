"""An OpenStack API service declared as a record, and the one walk that builds, checks and removes it.

The recipe every API role followed by hand (glance, placement): packages present, the lab's secrets, a database and
user in the lab's MariaDB, the keystone user and catalog entry, stacklab's conf file (0640, group = the service's
user), the schema sync, the systemd drop-ins, a restart when anything changed, and the wait until `GET /` answers.
A role with a step of its own adds it as a hook (glance's cache directories, its store check); everything else is
data. `problems` reads back exactly what `ensure` writes, so a second `up` plans nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import (
    ServiceLayout,
    file_problems,
    service_secrets,
    unit_problems,
    version_list_answers,
    wait_for_api,
)
from stacklab.drivers.openstack.infra import ensure_database
from stacklab.drivers.openstack.keystone import register_in_keystone, retire_service
from stacklab.exec.node_files import enable_and_restart, require_node, write_node_file, write_unit_files
from stacklab.exec.runner import Runner

MANAGE_TIMEOUT = 600.0

Hook = Callable[[DriverContext, Runner, ServiceLayout], None]


def _no_hook(_ctx: DriverContext, _runner: Runner, _layout: ServiceLayout) -> None:
    return None


@dataclass(frozen=True)
class ApiService:
    """Everything one API service needs, as data. `name` is also its keystone user, database, database user and
    the system user its files belong to; its secrets are `<name>-db` and `<name>-keystone`."""

    name: str
    unit: str  # the API's systemd unit (the package's)
    port: int
    conf: str  # stacklab's settings file, read after the package's
    dropin: str  # the unit's drop-in (stacklab's ExecStart)
    log_file: str  # quoted when the API does not come up
    catalog: Mapping[str, str]  # keystone service entry: name, type, description
    sync: tuple[str, ...]  # the schema sync, run as the service's user
    binary: str  # proves the package is installed
    render_conf: Callable[[ServiceLayout, str, str], str]  # (layout, db password, keystone password) -> text
    render_dropin: Callable[[ServiceLayout], str]
    check: Callable[[ServiceLayout], None] = lambda _layout: None  # PlanError before anything is touched
    before_sync: Hook = _no_hook  # e.g. directories the package ships with the wrong owner
    extra_problems: Callable[[Runner], list[str]] = lambda _runner: []
    outputs: Callable[[ServiceLayout], Mapping[str, Any]] = lambda _layout: {}
    sync_progress: bool = True  # say "db sync" (a long step) in the progress line

    @property
    def secrets(self) -> tuple[str, str]:
        return (f"{self.name}-db", f"{self.name}-keystone")

    def url(self, layout: ServiceLayout) -> str:
        return f"http://{layout.address}:{self.port}"

    def files(self, layout: ServiceLayout, db_password: str, user_password: str) -> dict[str, str]:
        return {
            self.conf: self.render_conf(layout, db_password, user_password),
            self.dropin: self.render_dropin(layout),
        }


class DeclaredRole:
    """The ServiceRole of an ApiService: one walk shared by every declared service."""

    def __init__(self, service: ApiService) -> None:
        self.service = service
        self.name = service.name

    def _answers(self, runner: Runner, layout: ServiceLayout) -> Callable[[], bool]:
        return lambda: version_list_answers(runner, self.service.url(layout))

    def problems(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> list[str]:
        svc = self.service
        secrets = service_secrets(ctx, svc.secrets, create=False)
        if secrets is None:
            return [f"the lab's {svc.name} secrets are missing from {ctx.state_dir / 'secrets'}"]
        found = file_problems(runner, svc.files(plan, *secrets)) + svc.extra_problems(runner)
        return [*found, *unit_problems(runner, svc.unit, url=svc.url(plan), answers=self._answers(runner, plan))]

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        svc, rid = self.service, f"service/{self.name}"
        svc.check(plan)
        require_node(runner, plan.controller, rid, files={svc.binary: svc.unit}, unit=svc.unit)
        secrets = service_secrets(ctx, svc.secrets, create=True)
        assert secrets is not None  # made when missing
        db_password, user_password = secrets
        ctx.progress(f"{rid}: database, keystone user and endpoints")
        ensure_database(runner, svc.name, svc.name, db_password)
        register_in_keystone(ctx, runner, plan, user=svc.name, password=user_password, service=svc.catalog,
                             url=svc.url(plan))  # fmt: skip
        changed = write_node_file(runner, svc.conf, svc.render_conf(plan, db_password, user_password), mode="0640")
        runner.run(["chown", f"root:{svc.name}", svc.conf], timeout=30)
        svc.before_sync(ctx, runner, plan)
        if svc.sync_progress:
            ctx.progress(f"{rid}: db sync")
        runner.run(["runuser", "-u", svc.name, "--", *svc.sync], timeout=MANAGE_TIMEOUT)
        changed = write_unit_files(runner, {svc.dropin: svc.render_dropin(plan)}) or changed
        enable_and_restart(runner, svc.unit, changed=changed)
        wait_for_api(runner, rid, url=svc.url(plan), unit=svc.unit, log_file=svc.log_file,
                     answers=self._answers(runner, plan))  # fmt: skip
        return {"url": svc.url(plan), **svc.outputs(plan)}

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        svc = self.service
        retire_service(ctx, runner, plan, units=(svc.unit,), user=svc.name, user_secret=svc.secrets[1],
                       service=svc.catalog, url=svc.url(plan), files=(svc.dropin, svc.conf))  # fmt: skip
