"""An OpenStack API service declared as a record, and the one walk that builds, checks and removes it.

The recipe every API role followed by hand (glance, placement, neutron): packages present, the lab's secrets, a
database and user in the lab's MariaDB, the keystone user and catalog entry, stacklab's conf file (0640, group =
the service's user), the schema sync, the systemd drop-ins, a restart of every unit when anything changed, and the
wait until the API unit answers `GET /`.
A role with a step of its own adds it as a hook (glance's cache directories, cinder's keyring and pool wait);
everything else is data. `problems` reads back exactly what `ensure` writes, so a second `up` plans nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack.common import (
    ServiceLayout,
    file_problems,
    service_secrets,
    unit_problems,
    version_list_answers,
    wait_for_api,
)
from stacklab.drivers.openstack.db_seed import seeded_sync
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
    the system user its files belong to. `secrets` are the lab secrets render_conf takes, in order: the database
    password first and the keystone password last (`<name>-db`, `<name>-keystone` unless told otherwise)."""

    name: str
    units: tuple[str, ...]  # the package's systemd units; the first serves the API
    port: int
    conf: str  # stacklab's settings file, read after the package's
    dropins: Mapping[str, str]  # unit -> its drop-in (stacklab's ExecStart)
    log_file: str  # the API's log, quoted when it does not come up
    catalog: Mapping[str, str]  # keystone service entry: name, type, description
    sync: tuple[str, ...]  # the schema sync, run as the service's user
    binaries: Mapping[str, str]  # file -> package that ships it (proves the packages are installed)
    render_conf: Callable[..., str]  # (layout, *secret values) -> text
    render_dropin: Callable[[ServiceLayout, str], str]  # (layout, unit) -> text
    secrets: tuple[str, ...] = ()
    endpoint_path: str = ""  # appended to the API URL in the keystone catalog (e.g. cinder's /v3/%(project_id)s)
    package_unit: str = ""  # the unit require_node names when the packages are missing (default: the API unit)
    # Hooks, in the order ensure() calls them; each a no-op unless given.
    check: Callable[[DriverContext, ServiceLayout], None] = lambda _ctx, _layout: None  # PlanError, nothing touched
    prepare: Hook = _no_hook  # after the packages are found, before secrets (e.g. a keyring that must be there)
    before_sync: Hook = _no_hook  # after the conf is written (e.g. directories the package ships with the wrong owner)
    after_start: Hook = _no_hook  # after the API answers (e.g. cinder's wait for its volume pool)
    after_remove: Hook = _no_hook
    extra_problems: Callable[[Runner, ServiceLayout], list[str]] = lambda _runner, _layout: []
    outputs: Callable[[ServiceLayout], Mapping[str, Any]] = lambda _layout: {}
    sync_progress: str | None = "db sync"  # the progress line before the (long) sync; None: say nothing
    sync_timeout: float = MANAGE_TIMEOUT

    def __post_init__(self) -> None:
        if not self.secrets:
            object.__setattr__(self, "secrets", (f"{self.name}-db", f"{self.name}-keystone"))

    @property
    def api_unit(self) -> str:
        return self.units[0]

    def url(self, layout: ServiceLayout) -> str:
        return f"http://{layout.address}:{self.port}"

    def files(self, layout: ServiceLayout, secrets: tuple[str, ...]) -> dict[str, str]:
        conf = self.render_conf(layout, *secrets)
        return {self.conf: conf, **{path: self.render_dropin(layout, unit) for unit, path in self.dropins.items()}}


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
        found = file_problems(runner, svc.files(plan, secrets)) + svc.extra_problems(runner, plan)
        found += unit_problems(runner, svc.api_unit, url=svc.url(plan), answers=self._answers(runner, plan))
        for unit in svc.units[1:]:
            found += unit_problems(runner, unit)
        return found

    def ensure(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> Mapping[str, Any]:
        svc, rid = self.service, f"service/{self.name}"
        svc.check(ctx, plan)
        require_node(runner, plan.controller, rid, files=dict(svc.binaries), unit=svc.package_unit or svc.api_unit)
        svc.prepare(ctx, runner, plan)
        secrets = service_secrets(ctx, svc.secrets, create=True)
        assert secrets is not None  # made when missing
        db_password, user_password = secrets[0], secrets[-1]
        ctx.progress(f"{rid}: database, keystone user and endpoints")
        ensure_database(runner, svc.name, svc.name, db_password)
        register_in_keystone(ctx, runner, plan, user=svc.name, password=user_password, service=svc.catalog,
                             url=svc.url(plan) + svc.endpoint_path)  # fmt: skip
        note = f"{rid}: {svc.sync_progress}" if svc.sync_progress else None
        self.converge_node(ctx, runner, plan, secrets, url=svc.url(plan), sync="seeded", sync_note=note)
        return {"url": svc.url(plan), **svc.outputs(plan)}

    def converge_node(
        self,
        ctx: DriverContext,
        runner: Runner,
        layout: ServiceLayout,
        secrets: tuple[str, ...],
        *,
        url: str,
        sync: Literal["seeded", "plain", "none"],
        sync_note: str | None = None,
        changed: bool = False,
        after_start: bool = True,
    ) -> None:
        """The service on one node, from its conf to its answering API: the conf (0640, group = the service's user),
        before_sync, the schema sync, the drop-ins, a restart of every unit when anything changed (or `changed`: a
        step before this one, such as a mount, changed the node), the wait for `url`, after_start.

        `sync`: "seeded" loads the schema from a host-side seed when one fits (db_seed: through the controller's
        MariaDB root socket), "plain" runs the service's own sync (a node without that socket), "none" leaves it to
        another node. `after_start` runs once per lab, on the node that synced."""
        svc, rid = self.service, f"service/{self.name}"
        changed = write_node_file(runner, svc.conf, svc.render_conf(layout, *secrets), mode="0640") or changed
        runner.run(["chown", f"root:{svc.name}", svc.conf], timeout=30)
        svc.before_sync(ctx, runner, layout)
        if sync != "none" and sync_note:
            ctx.progress(sync_note)
        argv = ["runuser", "-u", svc.name, "--", *svc.sync]
        if sync == "seeded":
            seeded_sync(ctx, runner, (svc.name,), argv, timeout=svc.sync_timeout)
        elif sync == "plain":
            runner.run(argv, timeout=svc.sync_timeout)
        dropins = {path: svc.render_dropin(layout, unit) for unit, path in svc.dropins.items()}
        changed = write_unit_files(runner, dropins) or changed
        for unit in svc.units:
            enable_and_restart(runner, unit, changed=changed)
        wait_for_api(runner, rid, url=url, unit=svc.api_unit, log_file=svc.log_file,
                     answers=lambda: version_list_answers(runner, url))  # fmt: skip
        if after_start:
            svc.after_start(ctx, runner, layout)

    def remove(self, ctx: DriverContext, runner: Runner, plan: ServiceLayout) -> None:
        svc = self.service
        retire_service(ctx, runner, plan, units=svc.units, user=svc.name, user_secret=svc.secrets[-1],
                       service=svc.catalog, url=svc.url(plan) + svc.endpoint_path,
                       files=(*svc.dropins.values(), svc.conf))  # fmt: skip
        svc.after_remove(ctx, runner, plan)
