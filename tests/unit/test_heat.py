"""Heat, the service added through the declared-service recipe: its module and one row in model/services.py.

The same fake controller as test_services.py: up (database, keystone user and orchestration endpoint, both units
with stacklab's file last on their command lines), observe plans nothing, a stopped engine is drift, down removes
what up wrote. Files golden."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import heat
from stacklab.drivers.openstack.common import service_layout
from stacklab.drivers.openstack.services import ServiceDriver
from stacklab.exec.runner import CommandResult
from stacklab.model.load import load_lab_text
from stacklab.model.services import SERVICE_NEEDS
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Resource
from tests.golden_util import check_golden
from tests.unit.test_services import BINARIES, LAB, FakeController, apply_all, ok

HEAT_LAB = LAB.replace("placement, neutron]", "placement, neutron, heat]")
HEAT_BINARIES = ("/usr/bin/heat-wsgi-api", "/usr/bin/heat-api", "/usr/bin/heat-engine")


class HeatController(FakeController):
    """The fake controller with Debian's heat packages installed: heat-manage, and heat-api answering on 8004."""

    def respond(self, argv: tuple[str, ...], stdin: str | None) -> CommandResult:
        inner = argv[4:] if argv[0] == "runuser" else argv
        if inner[0] == "heat-manage":
            self.manage.append(inner)
            return ok()
        if inner[0] == "test" and inner[-1] in HEAT_BINARIES:
            return ok()
        if inner[0] == "curl" and ":8004" in inner[-1]:
            up = "heat-api" in self.running
            return ok("300" if up else "") if "-w" in inner else ok(rc=0 if up else 7)
        return super().respond(argv, stdin)


@pytest.fixture
def resources() -> dict[str, Resource]:
    return {r.name: r for r in expand(load_lab_text(HEAT_LAB, "oslab.yml")) if r.kind == "service"}


@pytest.fixture
def node() -> HeatController:
    return HeatController()


@pytest.fixture
def ctx(tmp_path: Path, node: HeatController) -> DriverContext:
    lab = load_lab_text(HEAT_LAB, "oslab.yml")
    return DriverContext(lab=lab, runner=node, state_dir=tmp_path / "state", node_runner=lambda _n: node)


def test_heat_needs_keystone_the_database_and_the_queue() -> None:
    assert SERVICE_NEEDS["heat"] == ("keystone", "mariadb", "rabbitmq")
    resource = {r.name: r for r in expand(load_lab_text(HEAT_LAB, "oslab.yml"))}["heat"]
    assert {"service/keystone", "service/mariadb", "service/rabbitmq", "node/ctl1"} <= set(resource.deps)


def test_heat_files_golden(resources: dict[str, Resource]) -> None:
    plan = service_layout(resources["heat"], "oslab")
    text = heat.render_conf(plan, "DBPASSWORD", "RABBITPASSWORD", "USERPASSWORD")
    text += "".join(heat.render_dropin(plan, unit) for unit in heat.UNITS)
    check_golden("services/oslab-heat.txt", text)
    assert "bind_host = 10.250.0.10" in text and "--http-socket 10.250.0.10:8004" in text


def test_heat_up_observe_and_down(ctx: DriverContext, node: HeatController, resources: dict[str, Resource]) -> None:
    assert not set(HEAT_BINARIES) & set(BINARIES)  # the plain fake controller has no heat: HeatController adds it
    driver = ServiceDriver()
    apply_all(driver, ctx, resources)
    outputs = driver.apply(driver.diff(resources["heat"], None, None), ctx)
    assert outputs["url"] == "http://10.250.0.10:8004"
    assert {"heat-api", "heat-engine"} <= node.running & node.enabled
    (sync,) = [m for m in node.manage if m[0] == "heat-manage"]
    assert sync[-1] == "db_sync" and sync[-2] == heat.CONF  # stacklab's file last: heat.conf's own must not win
    (user,) = [r for r in node.keystone_requests if r.get("user") == "heat"]
    assert user["service"]["type"] == "orchestration"
    assert user["endpoints"]["public"] == "http://10.250.0.10:8004/v1/%(tenant_id)s"
    assert f"--config-file {heat.CONF}" in node.files[heat.DROPINS["heat-engine"]]
    secrets = [(ctx.state_dir / f"secrets/{s}").read_text().strip() for s in heat.SECRETS]
    assert not [c for c in node.calls if any(s in " ".join(c) for s in secrets)], "a secret leaked into argv"
    recorded = {"spec": dict(resources["heat"].spec), "hash": resources["heat"].hash, "outputs": outputs}
    observed = driver.observe(resources["heat"], ctx)
    assert observed is not None and observed.drift == ()
    assert driver.diff(resources["heat"], observed, recorded).action is Action.NOOP
    node.running.discard("heat-engine")
    observed = driver.observe(resources["heat"], ctx)
    assert observed is not None and observed.drift == ("heat-engine is not running",)
    driver.delete("service/heat", {"spec": dict(resources["heat"].spec)}, ctx)
    assert not any(p.startswith(("/etc/heat", "/etc/systemd/system/heat")) for p in node.files)
    assert any("DROP DATABASE IF EXISTS `heat`" in s for s in node.sql)
    assert node.keystone_requests[-1]["user"] == "heat" and node.keystone_requests[-1]["remove"] is True
