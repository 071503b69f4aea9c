"""Service roles (mariadb, rabbitmq, memcached, keystone) against a fake controller that answers like the real
tools: rendered files, the order of steps, secrets kept out of argv, idempotence, ownership and removal."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import neutron as svc_neutron
from stacklab.drivers.openstack import placement as svc_placement
from stacklab.drivers.openstack.common import service_layout
from stacklab.drivers.openstack.infra import (
    database_sql,
    render_mariadb_conf,
    render_memcached_conf,
    render_rabbitmq_conf,
)
from stacklab.drivers.openstack.keystone import render_conf, render_dropin, render_openrc
from stacklab.drivers.openstack.roles import ROLES, SHIPPED
from stacklab.drivers.openstack.services import ServiceDriver
from stacklab.drivers.storage.ceph.clients import rbd_secret_uuid
from stacklab.errors import PlanError
from stacklab.exec.runner import CommandResult
from stacklab.model.errors import LabError
from stacklab.model.load import load_lab_text
from stacklab.model.services import SERVICE_NAMES, SERVICE_NEEDS
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Change, Resource
from tests.golden_util import check_golden
from tests.unit.lab_util import os_lab, service_resource

LAB = os_lab(
    "oslab",
    """\
nodes:
  ctl1:
    image: os
    nics:
      mgmt: {address: 10.250.0.10}
      storage: {address: 10.251.0.10}
    roles: [controller]
openstack:
  services: [mariadb, rabbitmq, memcached, keystone, glance, placement, neutron]
""",
)

BINARIES = ("/usr/sbin/mariadbd", "/usr/sbin/rabbitmqctl", "/usr/share/memcached/scripts/systemd-memcached-wrapper",
            "/usr/bin/keystone-manage", "/usr/bin/glance-api", "/usr/bin/placement-api", "/usr/bin/neutron-server",
            "/usr/bin/neutron-linuxbridge-agent", "/usr/bin/neutron-dhcp-agent",
            "/usr/bin/neutron-metadata-agent")  # fmt: skip


def ok(stdout: str = "", rc: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult((), rc, stdout, stderr, 0.0)


@dataclass
class FakeController:
    """A controller node: files, units, MariaDB statements, RabbitMQ users, keystone-manage runs."""

    files: dict[str, str] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    enabled: set[str] = field(default_factory=set)
    sql: list[str] = field(default_factory=list)
    rabbit_users: dict[str, str] = field(default_factory=dict)
    manage: list[tuple[str, ...]] = field(default_factory=list)
    bootstrap_password: str | None = None
    keystone_requests: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True, input: str | None = None,
            **_: Any) -> CommandResult:  # fmt: skip
        from stacklab.exec.runner import CommandError

        assert timeout > 0
        args = tuple(argv)
        self.calls.append(args)
        result = self.respond(args, input)
        result = CommandResult(args, result.returncode, result.stdout, result.stderr, 0.0)
        if check and not result.ok:
            raise CommandError(result)
        return result

    def respond(self, argv: tuple[str, ...], stdin: str | None) -> CommandResult:
        if argv[0] == "runuser":
            argv = argv[4:]
        cmd = argv[0]
        if cmd == "sha256sum":
            import hashlib

            found = [p for p in argv[1:] if p in self.files]
            lines = "".join(f"{hashlib.sha256(self.files[p].encode()).hexdigest()}  {p}\n" for p in found)
            return ok(lines, rc=0 if len(found) == len(argv) - 1 else 1)
        if cmd == "install" and "-d" in argv:
            return ok()
        if cmd == "stat":
            return ok("".join(f"glance {path}\n" for path in argv[3:]))
        if cmd in ("glance-manage", "placement-manage", "neutron-db-manage"):
            self.manage.append(argv)
            return ok()
        if cmd == "python3" and stdin is not None and json.loads(stdin).get("get", {}).get("path") == "/v2.0/agents":
            # neutron's agents as the API lists them: those whose units run, on this (the only) node
            types = {"neutron-linuxbridge-agent": "Linux bridge agent", "neutron-dhcp-agent": "DHCP agent",
                     "neutron-metadata-agent": "Metadata agent"}  # fmt: skip
            agents = [{"host": "ctl1", "agent_type": t, "alive": True} for u, t in types.items() if u in self.running]
            return ok(json.dumps({"body": json.dumps({"agents": agents})}) + "\n")
        if cmd == "python3":
            assert stdin is not None
            self.keystone_requests.append(json.loads(stdin))
            return ok('{"changed": []}\n')
        if cmd == "install":
            assert stdin is not None
            self.files[argv[-1]] = stdin
            return ok()
        if cmd == "cat":
            return ok(self.files[argv[1]]) if argv[1] in self.files else ok(rc=1)
        if cmd == "test":
            path = argv[-1]
            if argv[1] == "-d":
                return ok(rc=0 if path == "/run/systemd/system" else 1)
            return ok(rc=0 if path in self.files or path in BINARIES else 1)
        if cmd == "rm":
            for path in argv[1:]:
                self.files.pop(path, None)
            return ok()
        if cmd in ("chown", "chmod"):
            return ok()
        if cmd == "systemctl":
            return self.systemctl(argv[1:])
        if cmd == "mysql":
            assert "mariadb" in self.running and stdin is not None
            self.sql.append(stdin)
            return ok()
        if cmd == "mysqladmin":
            return ok("mysqld is alive\n") if "mariadb" in self.running else ok(rc=1, stderr="can't connect")
        if cmd == "rabbitmqctl":
            return self.rabbitmqctl(argv[1:], stdin)
        if cmd == "keystone-manage":
            self.manage.append(argv)
            return ok()
        if cmd == "sh" and "keystone-manage" in argv:
            assert stdin is not None
            self.bootstrap_password = stdin.strip()
            self.manage.append(argv[argv.index("keystone-manage") :])
            return ok()
        if cmd == "curl":
            apis = {":9292": ("glance-api", "300"), ":8778": ("placement-api", "200"), ":9696": ("neutron-api", "200")}
            unit, code = next((v for k, v in apis.items() if k in argv[-1]), ("keystone", ""))
            up = unit in self.running
            return ok(code if up else "") if "-w" in argv else ok(rc=0 if up else 7)
        if cmd == "tail":
            return ok("log line\n")
        raise AssertionError(f"unexpected command {argv}")

    def systemctl(self, args: tuple[str, ...]) -> CommandResult:
        verb, units = args[0], [a for a in args[1:] if not a.startswith("-")]
        if verb == "is-active":
            return ok(rc=0 if units[0] in self.running else 3)
        if verb == "enable":
            self.enabled.update(units)
        elif verb == "restart":
            self.running.update(units)
            self.restarts.extend(units)
        elif verb == "disable":
            self.enabled.difference_update(units)
            if "--now" in args:
                self.running.difference_update(units)
        elif verb == "stop":
            self.running.difference_update(units)
        return ok()

    def rabbitmqctl(self, args: tuple[str, ...], stdin: str | None) -> CommandResult:
        args = tuple(a for a in args if a != "-q")
        if "rabbitmq-server" not in self.running:
            return ok(rc=69, stderr="node down")
        if args[0] == "await_startup":
            return ok()
        if args[0] == "list_users":
            return ok("".join(f"{u}\t[]\n" for u in ["guest", *self.rabbit_users]))
        if args[0] in ("add_user", "change_password"):
            assert stdin is not None and len(args) == 2, "the password goes on stdin"
            assert (args[0] == "add_user") == (args[1] not in self.rabbit_users)
            self.rabbit_users[args[1]] = stdin.strip()
            return ok()
        if args[0] == "delete_user":
            self.rabbit_users.pop(args[1], None)
            return ok()
        if args[0] == "set_permissions":
            return ok()
        raise AssertionError(f"unexpected rabbitmqctl {args}")


@pytest.fixture
def lab_resources() -> dict[str, Resource]:
    lab = load_lab_text(LAB, "oslab.yml")
    return {r.name: r for r in expand(lab) if r.kind == "service"}


@pytest.fixture
def node() -> FakeController:
    return FakeController()


@pytest.fixture
def ctx(tmp_path: Path, node: FakeController) -> DriverContext:
    lab = load_lab_text(LAB, "oslab.yml")
    return DriverContext(lab=lab, runner=node, state_dir=tmp_path / "state", node_runner=lambda _n: node)


def test_expand_gives_each_service_the_controller_address(lab_resources: dict[str, Resource]) -> None:
    keystone = lab_resources["keystone"]
    assert keystone.spec["controller"] == "ctl1" and keystone.spec["address"] == "10.250.0.10"
    assert set(keystone.deps) >= {"node/ctl1", "service/mariadb", "service/memcached"}


def test_services_without_a_role_are_pending(
    lab_resources: dict[str, Resource], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = ServiceDriver()
    assert {"mariadb", "rabbitmq", "memcached", "keystone", "placement", "neutron"} <= set(ROLES)
    assert driver.unsupported(lab_resources["keystone"]) is None
    monkeypatch.delitem(ROLES, "neutron")  # every service the model names has a role today
    reason = driver.unsupported(lab_resources["neutron"])
    assert reason is not None and "no driver for service neutron" in reason


def test_every_service_the_model_names_has_a_role_and_every_role_a_row() -> None:
    """The model's table (model/services.py) and the drivers' roles are one list: a row without a role would plan
    a pending service forever, a role without a row could never be named in a lab file."""
    shipped = [role.name for role in SHIPPED]
    assert len(shipped) == len(set(shipped)), "a role is listed twice"
    assert set(shipped) == set(SERVICE_NAMES)
    assert set(ROLES) == set(SERVICE_NAMES)
    assert all(set(needs) <= set(SERVICE_NAMES) for needs in SERVICE_NEEDS.values())


def test_a_service_the_table_does_not_name_is_refused_by_the_schema() -> None:
    text = LAB.replace("services: [", "services: [manila, ")
    assert text != LAB
    with pytest.raises(LabError) as raised:
        load_lab_text(text, "lab.yml")
    names = " or ".join(", ".join(f"'{n}'" for n in SERVICE_NAMES).rsplit(", ", 1))
    assert f"lab.yml:16:14: openstack.services[0]: Input should be {names}" in str(raised.value)


def test_rendered_files_golden(lab_resources: dict[str, Resource]) -> None:
    plans = {name: service_layout(r, "oslab") for name, r in lab_resources.items()}
    text = "\n".join(
        [
            render_mariadb_conf(plans["mariadb"]),
            render_rabbitmq_conf(plans["rabbitmq"]),
            render_memcached_conf(plans["memcached"]),
            render_conf(plans["keystone"], "DBPASSWORD"),
            render_dropin(plans["keystone"]),
            render_openrc(plans["keystone"], "ADMINPASSWORD"),
            database_sql("keystone", "keystone", "DBPASSWORD"),
            svc_placement.render_conf(plans["placement"], "DBPASSWORD", "USERPASSWORD"),
            svc_placement.render_dropin(plans["placement"]),
            svc_neutron.render_conf(plans["neutron"], "DBPASSWORD", "RABBITPASSWORD", "USERPASSWORD"),
            *(svc_neutron.render_dropin(plans["neutron"], unit) for unit in svc_neutron.UNITS),
        ]
    )
    check_golden("services/oslab-files.txt", text)


def test_sql_refuses_anything_but_plain_identifiers() -> None:
    with pytest.raises(ValueError, match="plain SQL identifier"):
        database_sql("keystone", "keystone'; DROP DATABASE mysql; --", "x")


def apply_all(driver: ServiceDriver, ctx: DriverContext, resources: dict[str, Resource]) -> dict[str, Any]:
    outputs = {}
    for name in ("mariadb", "rabbitmq", "memcached", "keystone", "glance"):
        resource = resources[name]
        change = driver.diff(resource, driver.observe(resource, ctx), None)
        outputs[name] = driver.apply(change, ctx)
    return outputs


def test_up_then_observe_plans_nothing_and_secrets_stay_out_of_argv(
    ctx: DriverContext, node: FakeController, lab_resources: dict[str, Resource]
) -> None:
    driver = ServiceDriver()
    outputs = apply_all(driver, ctx, lab_resources)
    assert outputs["keystone"]["auth_url"] == "http://10.250.0.10:5000/v3"
    assert {"mariadb", "rabbitmq-server", "memcached", "keystone", "glance-api"} <= node.running & node.enabled
    # keystone: database before db_sync, fernet keys, then bootstrap with the admin password from stdin
    admin = (ctx.state_dir / "secrets/keystone-admin").read_text().strip()
    db_password = (ctx.state_dir / "secrets/keystone-db").read_text().strip()
    assert oct((ctx.state_dir / "secrets/keystone-admin").stat().st_mode & 0o777) == "0o600"
    assert [m[m.index("--config-file") + 4] for m in node.manage] == [
        "db_sync", "fernet_setup", "credential_setup", "bootstrap", "db_sync", "db_load_metadefs",
    ]  # fmt: skip
    assert node.manage[-1][0] == "glance-manage"
    roles, glance_user = node.keystone_requests
    assert roles["ensure_roles"] == ["service", "ResellerAdmin"] and roles["admin_password"] == admin
    assert glance_user["user"] == "glance" and glance_user["admin_password"] == admin
    assert glance_user["roles"] == ["admin", "service"]
    assert glance_user["endpoints"]["public"] == "http://10.250.0.10:9292" and not glance_user["remove"]
    assert node.bootstrap_password == admin
    assert any("IDENTIFIED BY '" + db_password in s for s in node.sql)
    assert node.rabbit_users["openstack"] == (ctx.state_dir / "secrets/rabbitmq-openstack").read_text().strip()
    secrets = [admin, db_password, node.rabbit_users["openstack"]]
    assert not [c for c in node.calls if any(s in " ".join(c) for s in secrets)], "a secret leaked into argv"
    assert f"OS_PASSWORD={admin}" in node.files["/root/admin-openrc"]
    for name, resource in lab_resources.items():
        if name in ("placement", "neutron", "nova"):  # not applied here (placement and neutron have their own tests)
            continue
        observed = driver.observe(resource, ctx)
        assert observed is not None and observed.owned and observed.drift == (), name
        recorded = {"spec": dict(resource.spec), "hash": resource.hash, "outputs": outputs[name]}
        assert driver.diff(resource, observed, recorded).action is Action.NOOP
    # a second apply restarts nothing and changes no file
    before, restarts = dict(node.files), len(node.restarts)
    apply_all(driver, ctx, lab_resources)
    assert node.files == before and len(node.restarts) == restarts


def test_glance_loads_its_metadata_definitions_once_per_up_after_the_schema_sync(
    ctx: DriverContext, node: FakeController, lab_resources: dict[str, Resource]
) -> None:
    driver = ServiceDriver()
    apply_all(driver, ctx, lab_resources)
    glance = [m[m.index("--config-file") + 4 :] for m in node.manage if m[0] == "glance-manage"]
    # the package's definitions, loaded into the schema db_sync just made; glance skips namespaces it already has
    # (no merge/overwrite argument), so the run every `up` makes adds nothing the second time
    assert glance == [("db_sync",), ("db_load_metadefs", "/etc/glance/metadefs")]
    (load,) = [c for c in node.calls if "db_load_metadefs" in c]
    assert load[: load.index("glance-manage")][-4:] == ("runuser", "-u", "glance", "--")
    apply_all(driver, ctx, lab_resources)
    assert sum(m[-2:] == ("db_load_metadefs", "/etc/glance/metadefs") for m in node.manage) == 2


def test_a_stopped_service_is_drift_and_started_again(
    ctx: DriverContext, node: FakeController, lab_resources: dict[str, Resource]
) -> None:
    driver = ServiceDriver()
    apply_all(driver, ctx, lab_resources)
    node.running.discard("keystone")
    observed = driver.observe(lab_resources["keystone"], ctx)
    assert observed is not None and observed.drift == ("keystone is not running",)
    change = driver.diff(lab_resources["keystone"], observed, {"spec": dict(lab_resources["keystone"].spec),
                                                               "hash": lab_resources["keystone"].hash})  # fmt: skip
    assert change.action is Action.UPDATE
    driver.apply(change, ctx)
    assert "keystone" in node.running


def test_another_labs_service_is_never_touched(
    ctx: DriverContext, node: FakeController, lab_resources: dict[str, Resource]
) -> None:
    driver = ServiceDriver()
    node.files["/etc/stacklab/services/mariadb.json"] = '{"lab": "other", "service": "mariadb"}\n'
    observed = driver.observe(lab_resources["mariadb"], ctx)
    assert observed is not None and not observed.owned
    with pytest.raises(PlanError, match="belongs to other"):
        driver.apply(driver.diff(lab_resources["mariadb"], None, None), ctx)
    driver.delete("service/mariadb", {"spec": dict(lab_resources["mariadb"].spec)}, ctx)
    assert "/etc/stacklab/services/mariadb.json" in node.files and node.calls[-1][0] != "systemctl"


def test_down_leaves_a_service_to_its_nodes_when_they_all_go_in_the_same_run(
    ctx: DriverContext, node: FakeController, lab_resources: dict[str, Resource]
) -> None:
    driver = ServiceDriver()
    apply_all(driver, ctx, lab_resources)
    files, calls = dict(node.files), len(node.calls)
    spec = dict(lab_resources["glance"].spec)
    hosts = {str(spec["controller"]), *(str(h) for h in spec.get("hosts") or ())}
    going = dataclasses.replace(ctx, vanishing_nodes=frozenset(hosts))
    driver.delete("service/glance", {"spec": spec}, going)
    assert (node.files, len(node.calls)) == (files, calls)  # nothing done inside nodes that are going
    # a node that stays (an `up` that drops only the service, or one of its nodes): cleaned as before
    staying = dataclasses.replace(ctx, vanishing_nodes=frozenset(hosts) - {str(spec["controller"])})
    driver.delete("service/glance", {"spec": spec}, staying)
    assert "/etc/stacklab/services/glance.json" not in node.files


def test_delete_in_reverse_order_removes_every_file(
    ctx: DriverContext, node: FakeController, lab_resources: dict[str, Resource]
) -> None:
    driver = ServiceDriver()
    apply_all(driver, ctx, lab_resources)
    for name in ("glance", "keystone", "memcached", "rabbitmq", "mariadb"):
        driver.delete(f"service/{name}", {"spec": dict(lab_resources[name].spec)}, ctx)
    assert node.files == {}
    assert not node.running and not node.enabled
    assert "openstack" not in node.rabbit_users
    assert any("DROP DATABASE IF EXISTS `keystone`" in s for s in node.sql)
    assert any("DROP DATABASE IF EXISTS `glance`" in s for s in node.sql)
    assert node.keystone_requests[-1]["remove"] is True
    for name in ("keystone", "mariadb"):
        assert driver.observe(lab_resources[name], ctx) is None


def test_placement_up_observe_and_down(
    ctx: DriverContext, node: FakeController, lab_resources: dict[str, Resource]
) -> None:
    driver = ServiceDriver()
    apply_all(driver, ctx, lab_resources)
    outputs = driver.apply(driver.diff(lab_resources["placement"], None, None), ctx)
    assert outputs["url"] == "http://10.250.0.10:8778"
    assert "placement-api" in node.running & node.enabled
    assert node.manage[-1] == ("placement-manage", "db", "sync")
    assert any("CREATE DATABASE IF NOT EXISTS `placement`" in s for s in node.sql)
    (user,) = [r for r in node.keystone_requests if r.get("user") == "placement"]
    assert user["service"]["type"] == "placement" and user["endpoints"]["internal"] == outputs["url"]
    secret = (ctx.state_dir / "secrets/placement-db").read_text().strip()
    assert not [c for c in node.calls if any(secret in a for a in c)], "a secret leaked into argv"
    observed = driver.observe(lab_resources["placement"], ctx)
    assert observed is not None and observed.drift == ()
    node.running.discard("placement-api")
    observed = driver.observe(lab_resources["placement"], ctx)
    assert observed is not None and observed.drift
    driver.delete("service/placement", {"spec": dict(lab_resources["placement"].spec)}, ctx)
    assert not any(p.startswith(("/etc/placement", "/etc/systemd/system/placement")) for p in node.files)
    assert any("DROP DATABASE IF EXISTS `placement`" in s for s in node.sql)
    assert node.keystone_requests[-1]["user"] == "placement" and node.keystone_requests[-1]["remove"] is True


def test_neutron_up_observe_and_down(
    ctx: DriverContext, node: FakeController, lab_resources: dict[str, Resource]
) -> None:
    driver = ServiceDriver()
    apply_all(driver, ctx, lab_resources)
    outputs = driver.apply(driver.diff(lab_resources["neutron"], None, None), ctx)
    assert outputs["url"] == "http://10.250.0.10:9696"
    # neutron-server (API and RPC workers) in the package's API unit; the package's RPC-only server stays off
    assert "neutron-api" in node.running & node.enabled and "neutron-rpc-server" not in node.running
    dropin = node.files["/etc/systemd/system/neutron-api.service.d/stacklab.conf"]
    assert "ExecStart=/usr/bin/neutron-server --config-file" in dropin and "uwsgi" not in dropin
    conf = node.files["/etc/neutron/server.conf.d/50-stacklab.conf"]
    assert "bind_host = 10.250.0.10\nbind_port = 9696\napi_workers = 0\n" in conf
    (migrate,) = [m for m in node.manage if m[0] == "neutron-db-manage"]
    # stacklab's file last: neutron.conf's own [database] (SQLite) must not win
    assert migrate[-2:] == ("upgrade", "heads") and migrate[-3] == "/etc/neutron/server.conf.d/50-stacklab.conf"
    (user,) = [r for r in node.keystone_requests if r.get("user") == "neutron"]
    assert user["service"]["type"] == "network" and user["endpoints"]["public"] == outputs["url"]
    secret = (ctx.state_dir / "secrets/neutron-db").read_text().strip()
    assert not [c for c in node.calls if any(secret in a for a in c)], "a secret leaked into argv"
    observed = driver.observe(lab_resources["neutron"], ctx)
    assert observed is not None and observed.drift == ()
    # a lab made before ran the package's neutron-rpc-server with a drop-in: drift, and the next apply retires it
    node.running.add("neutron-rpc-server")
    node.enabled.add("neutron-rpc-server")
    node.files["/etc/systemd/system/neutron-rpc-server.service.d/stacklab.conf"] = "[Service]\n"
    observed = driver.observe(lab_resources["neutron"], ctx)
    assert observed is not None
    assert observed.drift == ("neutron-rpc-server is running (neutron-server in neutron-api does its work)",)
    driver.apply(driver.diff(lab_resources["neutron"], None, None), ctx)
    assert "neutron-rpc-server" not in node.running | node.enabled
    assert "/etc/systemd/system/neutron-rpc-server.service.d/stacklab.conf" not in node.files
    observed = driver.observe(lab_resources["neutron"], ctx)
    assert observed is not None and observed.drift == ()
    node.running.discard("neutron-api")
    observed = driver.observe(lab_resources["neutron"], ctx)
    assert observed is not None and observed.drift
    driver.delete("service/neutron", {"spec": dict(lab_resources["neutron"].spec)}, ctx)
    assert not any(p.startswith(("/etc/neutron", "/etc/systemd/system/neutron")) for p in node.files)
    assert any("DROP DATABASE IF EXISTS `neutron`" in s for s in node.sql)
    assert not {"neutron-api", "neutron-rpc-server"} & node.running


SWIFT_LAB = LAB.replace(
    "openstack:\n  services: [mariadb, rabbitmq, memcached, keystone, glance, placement, neutron]",
    "  s1: {image: os, nics: {mgmt: {address: 10.250.0.21}, storage: {address: 10.251.0.21}}, roles: [swift]}\n"
    "  s2: {image: os, nics: {mgmt: {address: 10.250.0.22}, storage: {address: 10.251.0.22}}, roles: [swift]}\n"
    "openstack:\n  services: [mariadb, memcached, keystone, swift]\n  swift: {replicas: 2}",
)


def test_swift_layout_rings_and_files_golden() -> None:
    from stacklab.drivers.openstack.swift import (
        STORAGE_UNITS,
        render_dropin,
        render_proxy_conf,
        render_rsyncd,
        render_server_conf,
        render_swift_conf,
        ring_commands,
        swift_layout,
    )

    lab = load_lab_text(SWIFT_LAB, "oslab.yml")
    resource = service_resource(lab, "swift")
    plan = service_layout(resource, "oslab")
    proxy, nodes, replicas = swift_layout(plan)
    # proxy on the controller's br-mgmt address; storage servers on br-storage
    assert (proxy, nodes, replicas) == ("ctl1", {"s1": "10.251.0.21", "s2": "10.251.0.22"}, 2)
    commands = ring_commands(nodes, replicas)
    assert ["swift-ring-builder", "object.builder", "add", "r1z2-10.251.0.22:6200/d1", "100"] in commands
    assert len(STORAGE_UNITS) == 11 and STORAGE_UNITS["swift-object"] == (
        "/usr/bin/swift-object-server",
        "/etc/swift/stacklab/object-server.conf",
    )
    text = "\n".join(
        [
            render_swift_conf(plan, "P" * 16 + "S" * 16),
            render_server_conf(plan, "object", "10.251.0.21"),
            render_rsyncd(plan, "10.251.0.21"),
            render_proxy_conf(plan, "SWIFTPASSWORD"),
            render_dropin(plan, *STORAGE_UNITS["swift-object-replicator"]),
            "\n".join(" ".join(c) for c in commands),
        ]
    )
    check_golden("services/oslab-swift.txt", text)


def test_swift_proxy_pipeline_has_the_sample_middlewares_in_order() -> None:
    from stacklab.drivers.openstack.swift import render_proxy_conf

    lab = load_lab_text(SWIFT_LAB, "oslab.yml")
    plan = service_layout(service_resource(lab, "swift"), "oslab")
    conf = render_proxy_conf(plan, "SWIFTPASSWORD")
    (line,) = [x for x in conf.splitlines() if x.startswith("pipeline = ")]
    pipeline = line.removeprefix("pipeline = ").split()
    # the order of Swift 2.30's proxy-server.conf-sample, keystone in tempauth's place
    expected = [
        "catch_errors", "gatekeeper", "healthcheck", "proxy-logging", "cache", "listing_formats", "bulk", "tempurl",
        "authtoken", "keystoneauth", "formpost", "staticweb", "copy", "container-quotas", "account-quotas", "slo",
        "dlo", "versioned_writes", "symlink", "proxy-logging", "proxy-server",
    ]  # fmt: skip
    assert pipeline == expected
    sections = {x.removeprefix("[filter:").rstrip("]") for x in conf.splitlines() if x.startswith("[filter:")}
    assert sections == set(pipeline) - {"proxy-server"}, "every filter of the pipeline has its section"
    for name, egg in (("container-quotas", "container_quotas"), ("account-quotas", "account_quotas")):
        assert f"[filter:{name}]\nuse = egg:swift#{egg}\n" in conf
    assert "[filter:versioned_writes]\nuse = egg:swift#versioned_writes\nallow_versioned_writes = true\n" in conf
    assert "reseller_admin_role = ResellerAdmin\n" in conf


CINDER_LAB = LAB.replace(
    "openstack:\n  services: [mariadb, rabbitmq, memcached, keystone, glance, placement, neutron]",
    "storage:\n  ceph:\n    mons: [ctl1]\n    osds: [{node: ctl1, count: 1, size: 1GiB}]\n    replicas: 1\n"
    "    pools: [volumes]\n    clients: [cinder]\n"
    "openstack:\n  services: [mariadb, rabbitmq, memcached, keystone, cinder]\n  cinder: {backends: [rbd]}",
)
CINDER_FILES = ("/usr/bin/cinder-volume", "/usr/bin/cinder-wsgi", "/etc/ceph/ceph.client.cinder.keyring")


@dataclass
class CinderController(FakeController):
    """The controller with cinder's packages and the Ceph step's keyring; the scheduler reports the RBD pool once
    cinder-volume runs."""

    keyring_mode: str = "root 600"

    def respond(self, argv: tuple[str, ...], stdin: str | None) -> CommandResult:
        inner = argv[4:] if argv[0] == "runuser" else argv
        if inner[0] == "test" and inner[-1] in CINDER_FILES:
            return ok()
        if inner[0] == "cinder-manage":
            self.manage.append(inner)
            return ok()
        if inner[0] in ("chgrp", "chmod"):
            group, mode = self.keyring_mode.split()
            self.keyring_mode = f"{inner[1]} {mode}" if inner[0] == "chgrp" else f"{group} {inner[1].lstrip('0')}"
            return ok()
        if inner[0] == "stat" and "%G %a" in inner:
            return ok(self.keyring_mode + "\n")
        if inner[0] == "curl" and ":8776" in inner[-1]:
            return ok("300" if "cinder-api" in self.running else "000")
        if inner[0] == "python3" and stdin is not None and "get" in json.loads(stdin):
            pools = [{"name": "ctl1@rbd#rbd"}] if "cinder-volume" in self.running else []
            return ok(json.dumps({"body": json.dumps({"pools": pools})}) + "\n")
        return super().respond(argv, stdin)


def cinder_setup(
    tmp_path: Path,
    lab_text: str = CINDER_LAB,
    ceph: dict[str, Any] | None = None,
    node_type: type[CinderController] = CinderController,
) -> tuple[CinderController, DriverContext, dict[str, Resource]]:
    node = node_type()
    lab = load_lab_text(lab_text, "oslab.yml")
    outputs = {"ceph/oslab": ceph or {"pools": ["volumes"], "clients": {"cinder": "ceph-client-cinder"}}}
    ctx = DriverContext(lab=lab, runner=node, state_dir=tmp_path / "state", node_runner=lambda _n: node,
                        outputs=outputs)  # fmt: skip
    return node, ctx, {r.name: r for r in expand(lab) if r.kind == "service"}


def test_cinder_rbd_files_golden(tmp_path: Path) -> None:
    from stacklab.drivers.openstack import cinder as svc_cinder

    _, _, resources = cinder_setup(tmp_path)
    plan = service_layout(resources["cinder"], "oslab")
    assert resources["cinder"].spec["hosts"] == ["ctl1"]  # cinder-volume on the controller by default
    text = "\n".join(
        [svc_cinder.render_conf(plan, "DBPASSWORD", "RABBITPASSWORD", "USERPASSWORD")]
        + [svc_cinder.render_dropin(plan, unit) for unit in svc_cinder.UNITS]
    )
    check_golden("services/oslab-cinder.txt", text)


def test_cinder_up_reports_the_pool_and_observes_clean(tmp_path: Path) -> None:
    node, ctx, resources = cinder_setup(tmp_path)
    driver = ServiceDriver()
    outputs = {}
    for name in ("mariadb", "rabbitmq", "memcached", "keystone", "cinder"):
        outputs[name] = driver.apply(driver.diff(resources[name], None, None), ctx)
    cinder = outputs["cinder"]
    assert cinder["pool"] == "ctl1@rbd#rbd" and cinder["ceph_user"] == "cinder"
    assert {"cinder-api", "cinder-scheduler", "cinder-volume"} <= node.running & node.enabled
    assert node.keyring_mode == "cinder 640"
    (sync,) = [m for m in node.manage if m[0] == "cinder-manage"]
    assert sync[-2:] == ("db", "sync") and "/etc/cinder/cinder.conf.d/50-stacklab.conf" in sync
    register = [r for r in node.keystone_requests if r.get("user") == "cinder"]
    assert register and register[0]["endpoints"]["public"] == "http://10.250.0.10:8776/v3/%(project_id)s"
    secrets = [(ctx.state_dir / f"secrets/{n}").read_text().strip() for n in ("cinder-db", "cinder-keystone")]
    assert not [c for c in node.calls if any(s in " ".join(c) for s in secrets)], "a secret leaked into argv"
    observed = driver.observe(resources["cinder"], ctx)
    assert observed is not None and observed.drift == ()
    node.running.discard("cinder-volume")
    observed = driver.observe(resources["cinder"], ctx)
    assert observed is not None and observed.drift == ("cinder-volume is not running",)
    driver.delete("service/cinder", {"spec": dict(resources["cinder"].spec)}, ctx)
    assert not any(p.startswith(("/etc/cinder", "/etc/systemd/system/cinder")) for p in node.files)
    assert node.keyring_mode == "root 600" and not {"cinder-api", "cinder-volume"} & node.running
    assert any("DROP DATABASE IF EXISTS `cinder`" in s for s in node.sql)
    assert node.keystone_requests[-1]["user"] == "cinder" and node.keystone_requests[-1]["remove"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backends": ["rbd", "nfs"]}, "cinder backend nfs has no volume node in the spec"),
        ({"backends": []}, r"cinder backend \(none\) is not wired yet"),
        ({"volume_node": "ctl1b"}, "cinder-volume runs on the controller"),
    ],
)
def test_cinder_refuses_what_is_not_wired(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    # A lab file asking for these is refused at load time (model/checks.py, tests/unit/test_model_hardening.py);
    # the driver still refuses a spec that says so (a state file, a spec built without the loader).
    node, ctx, resources = cinder_setup(tmp_path)
    cinder = resources["cinder"]
    cinder = dataclasses.replace(cinder, spec={**cinder.spec, "config": {**cinder.spec["config"], **change}})
    with pytest.raises(PlanError, match=message):
        ServiceDriver().apply(Change(cinder, Action.CREATE), ctx)
    assert not any(c[0] == "systemctl" for c in node.calls)


def test_cinder_needs_the_volumes_pool_and_the_cinder_client(tmp_path: Path) -> None:
    _, ctx, resources = cinder_setup(tmp_path, ceph={"pools": ["images"], "clients": {}})
    with pytest.raises(PlanError, match="pool volumes and client cinder"):
        ServiceDriver().apply(Change(resources["cinder"], Action.CREATE), ctx)


NOVA_FILES = ("/usr/bin/nova-api-wsgi", "/usr/bin/nova-conductor", "/usr/bin/nova-scheduler", "/usr/bin/nova-compute",
              "/usr/sbin/libvirtd", "/etc/ceph/ceph.client.cinder.keyring", "/usr/bin/nova-metadata-wsgi")  # fmt: skip
NOVA_COMPUTE = (
    "  cmp1: {image: os, nics: {mgmt: {address: 10.250.0.31}, storage: {address: 10.251.0.31}}, roles: [compute]}"
)
NOVA_LAB = (
    CINDER_LAB.replace("    roles: [controller]\n", f"    roles: [controller]\n{NOVA_COMPUTE}\n")
    .replace("keystone, cinder]", "keystone, glance, placement, neutron, nova, cinder]\n  nova: {images_type: rbd}")
    .replace("pools: [volumes]", "pools: [volumes, vms]")
)


@dataclass
class NovaNodes(CinderController):
    """The controller and one compute in one fake (the driver's node runner hands it out for both): nova-manage runs,
    libvirt secrets, and the compute API's view of the nova-compute service once it runs."""

    cells: list[str] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    compute: NovaNodes | None = None  # the compute node, as the controller's API sees it
    # how many discover_hosts runs before the compute's hypervisor shows: 2 = its compute node record was written
    # after the first run (a slow compute: its service reports up before its resource tracker writes the record)
    discovers_needed: int = 1

    def respond(self, argv: tuple[str, ...], stdin: str | None) -> CommandResult:
        inner = argv[4:] if argv[0] == "runuser" else argv
        if inner[0] == "test" and inner[-1] in NOVA_FILES:
            return ok()
        if inner[0] == "cat" and inner[-1].endswith("ceph.client.cinder.keyring"):
            return ok("[client.cinder]\n\tkey = QUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ==\n")
        if inner[0] == "nova-manage":
            self.manage.append(inner)
            if inner[-2:] == ("list_cells",) or inner[-1] == "list_cells":
                rows = "".join(f"| {c} | uuid |\n" for c in self.cells)
                return ok(f"+------+\n|  Name  |  UUID |\n{rows}")
            if "create_cell" in inner:
                self.cells.append(inner[inner.index("--name") + 1])
            return ok()
        if inner[0] in ("cp", "mv"):  # nova_migration keeps the shipped libvirt files beside its own
            source, target = inner[-2:]
            if source in self.files and not ("-n" in inner and target in self.files):
                self.files[target] = self.files.pop(source) if inner[0] == "mv" else self.files[source]
            return ok()
        if inner[0] == "virsh":
            if inner[1] == "secret-set-value":
                self.secrets[inner[3]] = self.files[inner[-1]].strip()
            return ok()
        if inner[0] == "curl" and ":8774" in inner[-1]:
            return ok("200" if "nova-api" in self.running else "000")
        if inner[0] == "curl" and ":8775" in inner[-1]:
            return ok("200" if "nova-api-metadata" in self.running else "000")
        if inner[0] == "python3" and stdin is not None and "get" in json.loads(stdin):
            path = json.loads(stdin)["get"]["path"]
            if path.startswith("/os-services"):
                state = "up" if self.compute and "nova-compute" in self.compute.running else "down"
                body = {"services": [{"host": "cmp1", "state": state}]}
            elif path == "/os-hypervisors":
                discovered = sum("discover_hosts" in m for m in self.manage) >= self.discovers_needed
                body = {"hypervisors": [{"hypervisor_hostname": "cmp1"}] if discovered else []}
            else:
                return super().respond(argv, stdin)
            return ok(json.dumps({"body": json.dumps(body)}) + "\n")
        return super().respond(argv, stdin)


def test_nova_files_golden(tmp_path: Path) -> None:
    from stacklab.drivers.openstack import nova as svc_nova

    lab = load_lab_text(NOVA_LAB, "oslab.yml")
    resource = next(r for r in expand(lab) if r.name == "nova")
    plan = service_layout(resource, "oslab")
    assert plan.hosts == ("ctl1", "cmp1")
    secrets = {"db_password": "DBPASSWORD", "rabbit_password": "RABBITPASSWORD", "user_password": "USERPASSWORD",
               "metadata_secret": "METADATASECRET"}  # fmt: skip
    text = "\n".join(
        [
            svc_nova.render_conf(plan, "ctl1", "10.250.0.10", **secrets),
            svc_nova.render_conf(plan, "cmp1", "10.250.0.31", **secrets),
            *(svc_nova.render_dropin(plan, unit) for unit in (*svc_nova.CONTROLLER_UNITS, "nova-compute")),
            svc_nova.render_secret_xml(plan),
        ]
    )
    check_golden("services/oslab-nova.txt", text)


def test_nova_up_maps_the_compute_and_down_undoes_it(tmp_path: Path) -> None:
    from stacklab.drivers.openstack import nova as svc_nova
    from stacklab.drivers.openstack import nova_migration

    ceph = {"pools": ["volumes", "vms"], "clients": {"cinder": "k"}}
    fake, ctx, resources = cinder_setup(tmp_path, NOVA_LAB, ceph, node_type=NovaNodes)
    assert isinstance(fake, NovaNodes)
    node, compute = fake, NovaNodes()
    node.compute = compute
    ctx = dataclasses.replace(ctx, node_runner=lambda n: compute if n == "cmp1" else node)
    driver = ServiceDriver()
    for name in ("mariadb", "rabbitmq", "memcached", "keystone"):
        driver.apply(driver.diff(resources[name], None, None), ctx)
    outputs = driver.apply(driver.diff(resources["nova"], None, None), ctx)
    assert outputs["computes"] == ["cmp1"] and outputs["url"] == "http://10.250.0.10:8774/v2.1"
    assert {"nova-api", "nova-conductor", "nova-scheduler"} <= node.running & node.enabled
    assert {"libvirtd", "nova-compute"} <= compute.running & compute.enabled
    steps = [m[5:] for m in node.manage if m[0] == "nova-manage"]
    assert steps[:4] == [("api_db", "sync"), ("cell_v2", "map_cell0"), ("cell_v2", "list_cells"),
                         ("cell_v2", "create_cell", "--name", "cell1")]  # fmt: skip
    assert steps[-1] == ("cell_v2", "discover_hosts") and ("db", "sync") in steps
    assert node.cells == ["cell1"]
    assert compute.secrets == {rbd_secret_uuid("oslab"): "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ=="}
    assert compute.keyring_mode == "nova 640"
    assert not any(p.endswith(".key") for p in compute.files), "the key file outlives secret-set-value"
    # live migration: the lab key root-only on the compute, and libvirt's files (a lone compute admits nobody)
    assert compute.files[nova_migration.KEY_PATH].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert compute.files[nova_migration.QEMU_CONF].count('"10.250.0.31"') == 2
    assert "ssh-ed25519" not in compute.files[nova_migration.AUTHORIZED_KEYS]
    assert all(any(f"CREATE DATABASE IF NOT EXISTS `{d}`" in s for s in node.sql) for d in svc_nova.DATABASES)
    observed = driver.observe(resources["nova"], ctx)
    assert observed is not None and observed.drift == ()
    # a second up creates no second cell
    driver.apply(driver.diff(resources["nova"], None, None), ctx)
    assert node.cells == ["cell1"]
    driver.delete("service/nova", {"spec": dict(resources["nova"].spec)}, ctx)
    for fake_node in (node, compute):
        assert not any(p.startswith(("/etc/nova", "/etc/systemd/system/nova")) for p in fake_node.files)
    assert all(any(f"DROP DATABASE IF EXISTS `{d}`" in s for s in node.sql) for d in svc_nova.DATABASES)
    assert not {"nova-api", "nova-conductor"} & node.running and not {"nova-compute", "libvirtd"} & compute.running
    assert compute.keyring_mode == "root 600"
    assert not {nova_migration.KEY_PATH, nova_migration.AUTHORIZED_KEYS, nova_migration.SSH_CLIENT_CONF} & set(
        compute.files
    )


def test_nova_rbd_images_need_the_vms_pool(tmp_path: Path) -> None:
    _, ctx, resources = cinder_setup(tmp_path, NOVA_LAB, {"pools": ["volumes"], "clients": {"cinder": "k"}})
    driver = ServiceDriver()
    with pytest.raises(PlanError, match="pool vms"):
        driver.apply(driver.diff(resources["nova"], None, None), ctx)


def ini_sections(text: str) -> dict[str, dict[str, str]]:
    """An INI text as {section: {key: value}} (later files of one node are separate texts here)."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.read_string(text)
    return {name: dict(parser[name]) for name in parser.sections()}


def test_nova_sends_its_service_token_from_the_api_and_every_compute() -> None:
    """cinder (CVE-2023-2088 fix, in Debian's 21.3.1) refuses to delete an in-use attachment unless the request
    carries nova's service token of a user with the `service` role: without [service_user] every detach through
    nova, rebuild with a volume or delete of a server with a volume leaves the volume stuck (HTTP 409
    ConflictNovaUsingAttachment). Both the API (local deletes) and nova-compute (detach) call cinder."""
    from stacklab.drivers.openstack import nova as svc_nova

    lab = load_lab_text(NOVA_LAB, "oslab.yml")
    plan = service_layout(next(r for r in expand(lab) if r.name == "nova"), "oslab")
    secrets = {"db_password": "D", "rabbit_password": "R", "user_password": "NOVAPASSWORD"}
    for node, address in (("ctl1", "10.250.0.10"), ("cmp1", "10.250.0.31")):
        conf = ini_sections(svc_nova.render_conf(plan, node, address, **secrets))
        service_user = conf.get("service_user", {})
        assert service_user.get("send_service_user_token") == "true", f"{node}: {conf.keys()}"
        assert (service_user.get("username"), service_user.get("password")) == ("nova", "NOVAPASSWORD"), node
        assert service_user.get("auth_type") == "password" and service_user.get("project_name") == "service"
        assert service_user.get("auth_url") == "http://10.250.0.10:5000", node
    api = ini_sections(svc_nova.render_conf(plan, "ctl1", "10.250.0.10", **secrets))["keystone_authtoken"]
    assert (api["service_token_roles"], api["service_token_roles_required"]) == ("service", "true")


def test_cinder_checks_service_tokens_and_sends_its_own_to_nova(tmp_path: Path) -> None:
    """cinder's API honours a service token only with the `service` role (what its attachment-delete check looks
    for); cinder calls nova (volume events) as `cinder` with its own service token."""
    from stacklab.drivers.openstack import cinder as svc_cinder

    _, _, resources = cinder_setup(tmp_path)
    conf = ini_sections(svc_cinder.render_conf(service_layout(resources["cinder"], "oslab"), "D", "R", "CINDERPW"))
    assert conf["keystone_authtoken"]["service_token_roles"] == "service"
    assert conf["keystone_authtoken"]["service_token_roles_required"] == "true"
    assert conf["service_user"]["send_service_user_token"] == "true"
    assert (conf["service_user"]["username"], conf["service_user"]["password"]) == ("cinder", "CINDERPW")
    assert (conf["nova"]["username"], conf["nova"]["auth_type"], conf["nova"]["interface"]) == (
        "cinder", "password", "public")  # fmt: skip


def test_keystone_makes_the_service_role_and_every_service_user_holds_it(tmp_path: Path) -> None:
    """keystone's bootstrap makes admin, member and reader only; `up` makes `service`, and each service user (nova's
    above all: cinder checks its token's roles) gets admin and service on the service project."""
    node, ctx, resources = cinder_setup(tmp_path)
    driver = ServiceDriver()
    for name in ("mariadb", "rabbitmq", "memcached", "keystone", "cinder"):
        driver.apply(driver.diff(resources[name], None, None), ctx)
    assert {"ensure_roles": ["service", "ResellerAdmin"]}.items() <= node.keystone_requests[0].items()
    (cinder,) = [r for r in node.keystone_requests if r.get("user") == "cinder"]
    assert cinder["roles"] == ["admin", "service"]


class FakeKeystone:
    """keystoneclient's v3 managers over dicts, for keystone_tool's register()."""

    def __init__(self, roles: tuple[str, ...]) -> None:
        self.made: dict[str, dict[str, Any]] = {"project": {}, "user": {}, "role": {r: object() for r in roles},
                                                 "service": {}}  # fmt: skip
        self.grants: set[tuple[str, str]] = set()
        ks = self

        class Manager:
            def __init__(self, kind: str) -> None:
                self.kind = kind

            def list(self, name: str | None = None, **_: Any) -> list[Any]:
                found = ks.made[self.kind]
                return [v for k, v in found.items() if name is None or k == name]

            def create(self, name: str, *_: Any, **__: Any) -> Any:
                ks.made[self.kind][name] = made = type("Obj", (), {"id": name, "name": name})()
                return made

            def update(self, *_: Any, **__: Any) -> None:
                return None

            def grant(self, role: Any, user: Any, project: Any) -> None:
                ks.grants.add((user.name, next(k for k, v in ks.made["role"].items() if v is role)))

        class Assignments:
            def list(self, user: Any, project: Any, role: Any) -> list[Any]:
                name = next(k for k, v in ks.made["role"].items() if v is role)
                return [1] if (user.name, name) in ks.grants else []

        class Endpoints:
            def list(self, **_: Any) -> list[Any]:
                return []

            def create(self, *_: Any, **__: Any) -> None:
                return None

        self.projects, self.users, self.roles = Manager("project"), Manager("user"), Manager("role")
        self.services, self.role_assignments, self.endpoints = Manager("service"), Assignments(), Endpoints()


def test_keystone_tool_makes_the_service_role_and_grants_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from stacklab.drivers.openstack import keystone_tool

    fake_ksa = types.ModuleType("keystoneauth1")
    fake_ksa.exceptions = types.SimpleNamespace(Conflict=type("Conflict", (Exception,), {}))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keystoneauth1", fake_ksa)
    ks = FakeKeystone(roles=("admin", "member", "reader"))  # what bootstrap leaves
    request = {"region": "RegionOne", "user": "nova", "password": "p", "project": "service", "endpoints": {},
               "roles": ["admin", "service"], "service": {"name": "nova", "type": "compute"}}  # fmt: skip
    changed = keystone_tool.register(ks, request)
    assert "role service" in changed and ("nova", "service") in ks.grants and ("nova", "admin") in ks.grants
    assert keystone_tool.register(ks, request) == [], "a second registration changes nothing"


def test_golden_regeneration_is_refused_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tox passes STACKLAB_* through: an exported STACKLAB_REGEN_GOLDEN=1 must not turn CI's golden tests green."""
    from tests import golden_util

    assert golden_util.regenerating({"STACKLAB_REGEN_GOLDEN": "1"}) is True
    assert golden_util.regenerating({"CI": "true"}) is False
    with pytest.raises(AssertionError, match="under CI"):
        golden_util.regenerating({"STACKLAB_REGEN_GOLDEN": "1", "CI": "true"})
    monkeypatch.setattr(golden_util, "GOLDEN", tmp_path)
    (tmp_path / "x.txt").write_text("expected\n")
    monkeypatch.setenv("STACKLAB_REGEN_GOLDEN", "1")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(AssertionError, match="under CI"):
        golden_util.check_golden("x.txt", "something else\n")
    assert (tmp_path / "x.txt").read_text() == "expected\n", "the golden file was rewritten under CI"


def test_a_lab_named_from_its_state_gets_the_addresses_plan_gets(tmp_path: Path) -> None:
    """`status aio` reads the lab from the state file, whose keys are sorted: the nodes came back alphabetical and
    `auto` addresses (handed out in file order) moved, so nova's rendered my_ip differed from the node's and status
    reported drift that `plan` (from the lab file) did not. The lab restored by name keeps the file's order."""
    import types

    from stacklab.engine.events import EventBus
    from stacklab.engine.state import StateStore
    from stacklab.model.addressing import node_addresses
    from stacklab.model.load import load_lab
    from stacklab.session import Session, lab_from_arg

    lab_file = Path(__file__).resolve().parents[2] / "labs" / "aio.yml"
    lab = load_lab(lab_file)
    assert list(lab.nodes) != sorted(lab.nodes), "the test needs a lab whose nodes are not in name order"
    store = StateStore(tmp_path, lab.name)
    store.set_meta("host_before", {})  # no host snapshot in a unit test
    session = Session(lab, types.SimpleNamespace(state=store), EventBus(), None)  # type: ignore[arg-type]
    session.remember_host_before_first_up()
    restored = lab_from_arg(lab.name, tmp_path)  # a fresh read of the state file, as `status aio` does
    assert list(restored.nodes) == list(lab.nodes)
    assert node_addresses(restored) == node_addresses(lab)
    nova = next(r for r in expand(lab) if r.name == "nova")
    from stacklab.drivers.openstack import nova as svc_nova

    plan = service_layout(nova, lab.name)
    for compute in svc_nova.computes(plan):
        mine = str(node_addresses(restored)[compute]["mgmt"])
        assert svc_nova.render_conf(plan, compute, mine, db_password="d", rabbit_password="r", user_password="u") == (
            svc_nova.render_conf(plan, compute, str(node_addresses(lab)[compute]["mgmt"]), db_password="d",
                                 rabbit_password="r", user_password="u"))  # fmt: skip


def test_nova_up_discovers_again_a_compute_whose_record_came_after_the_first_discover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stacklab.drivers.openstack import nova as svc_nova

    monkeypatch.setattr(svc_nova, "COMPUTE_BUDGET", 20.0)  # one discover only would wait it out and fail
    ceph = {"pools": ["volumes", "vms"], "clients": {"cinder": "k"}}
    fake, ctx, resources = cinder_setup(tmp_path, NOVA_LAB, ceph, node_type=NovaNodes)
    assert isinstance(fake, NovaNodes)
    node, compute = fake, NovaNodes()
    node.compute, node.discovers_needed = compute, 2
    ctx = dataclasses.replace(ctx, node_runner=lambda n: compute if n == "cmp1" else node)
    driver = ServiceDriver()
    for name in ("mariadb", "rabbitmq", "memcached", "keystone"):
        driver.apply(driver.diff(resources[name], None, None), ctx)
    outputs = driver.apply(driver.diff(resources["nova"], None, None), ctx)
    assert outputs["computes"] == ["cmp1"]
    assert sum("discover_hosts" in m for m in node.manage) == 2
