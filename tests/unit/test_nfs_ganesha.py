"""NFS role driver with the ganesha backend: golden ganesha.conf, the parser, apply/observe/diff/delete on a fake
node (rpcbind for v3, reload on export changes, restart on core changes, a second `up` plans nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext, driver_for
from stacklab.drivers.nfs import NfsDriver, outputs_of, plan_nfs, state_drift
from stacklab.drivers.nfs_ganesha import (
    CONF_PATH,
    DROPIN_PATH,
    ganesha_state,
    parse_ganesha_blocks,
    render_dropin,
    render_ganesha_conf,
)
from stacklab.errors import PlanError
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult
from stacklab.model.lab import Lab
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Change, Resource
from tests.golden_util import check_golden
from tests.unit.test_lvm import FakeNode

LABS = Path(__file__).resolve().parents[2] / "labs"


@pytest.fixture
def lab() -> Lab:
    return load_lab_text((LABS / "aio.yml").read_text(), "aio.yml")


@pytest.fixture
def resource(lab: Lab) -> Resource:
    return next(r for r in expand(lab) if r.kind == "nfs")


def ganesha_node(active: set[str] | None = None) -> tuple[FakeNode, set[str]]:
    node = FakeNode(files={"/usr/bin/ganesha.nfsd": ""})
    running = set() if active is None else active

    def systemctl(argv: tuple[str, ...]) -> CommandResult:
        verb, unit = argv[1], argv[-1]
        if verb in ("start", "restart") or (verb == "enable" and "--now" in argv):
            running.add(unit)
        if verb == "disable" and "--now" in argv:
            running.discard(unit)
        rc = 3 if verb == "is-active" and unit not in running else 0
        return CommandResult(argv, rc, "", "", 0.0)

    node.expect(["systemctl"], responder=systemctl)
    node.expect(["ss", "-Hltn", "sport = :2049"], stdout="LISTEN 0 4096 172.29.244.21:2049 0.0.0.0:*\n")
    return node, running


def ctx_for(lab: Lab, node: FakeRunner, state_dir: Path) -> DriverContext:
    return DriverContext(lab=lab, runner=FakeRunner(), state_dir=state_dir, node_runner=lambda _n: node)


def test_conf_golden_and_policy(lab: Lab, resource: Resource) -> None:
    plan = plan_nfs(resource.id, resource.name, resource.spec, lab)
    text = render_ganesha_conf(plan)
    check_golden("storage/ganesha-aio.conf", text)
    check_golden("storage/ganesha-dropin.conf", render_dropin(plan))
    state = ganesha_state(text)
    assert state["core"] == {"bind_addr": "172.29.244.21", "protocols": [3, 4], "graceless": "true"}
    assert state["default_access"] == "none"
    images = state["exports"]["/srv/nfs/images"]
    assert images["pseudo"] == "/srv/nfs/images" and images["fsal"] == "VFS" and images["access"] == "none"
    assert images["clients"] == {"172.29.244.0/24": {"access": "rw", "squash": "no_root_squash"}}
    assert outputs_of(plan) == {
        "implementation": "ganesha",
        "server": "172.29.244.21",
        "exports": {"images": "/srv/nfs/images", "instances": "/srv/nfs/instances"},
        "versions": [3, 4],
        "clients": "172.29.244.0/24",
    }


def test_parser_ignores_comments_and_layout() -> None:
    root = parse_ganesha_blocks(
        '# c\nEXPORT{Export_Id=7;Path="/x";FSAL{Name=VFS;}CLIENT{Clients=10.0.0.0/8, 1.2.3.4;}}\n'
    )
    export = root.first("EXPORT")
    assert export is not None and export.get("Path") == "/x" and export.get("export_id") == "7"
    client = export.first("CLIENT")
    assert client is not None and client.get("Clients") == "10.0.0.0/8, 1.2.3.4"


def test_apply_fresh_then_noop(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node, running = ganesha_node()
    ctx = ctx_for(lab, node, tmp_path)
    driver = NfsDriver()
    assert isinstance(driver_for("nfs"), NfsDriver)
    outputs = driver.apply(Change(resource, Action.CREATE), ctx)
    assert outputs["exports"] == {"images": "/srv/nfs/images", "instances": "/srv/nfs/instances"}
    assert ("mkdir", "-p", "/srv/nfs/images") in node.calls
    assert ("systemctl", "enable", "--now", "rpcbind.service") in node.calls
    start = node.calls.index(("systemctl", "start", "nfs-ganesha.service"))
    assert node.calls.index(("systemctl", "enable", "--now", "rpcbind.service")) < start
    assert node.files[CONF_PATH] == render_ganesha_conf(plan_nfs(resource.id, resource.name, resource.spec, lab))
    assert running == {"rpcbind.service", "nfs-ganesha.service", "stacklab-filter-nfs.service"}
    assert "RestrictAddressFamilies=~AF_INET6" in node.files[DROPIN_PATH]
    assert node.calls.index(("systemctl", "daemon-reload")) < start

    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.owned and observed.drift == ()
    recorded = {"hash": resource.hash, "spec": dict(resource.spec), "outputs": outputs}
    assert driver.diff(resource, observed, recorded).action is Action.NOOP
    before = len(node.calls)
    driver.apply(Change(resource, Action.UPDATE), ctx)
    assert not [c for c in node.calls[before:] if c[0] == "install" or c[1:2] in (("restart",), ("reload",))]


def test_export_change_reloads_and_version_change_restarts(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node, _running = ganesha_node()
    ctx = ctx_for(lab, node, tmp_path)
    NfsDriver().apply(Change(resource, Action.CREATE), ctx)

    more = Resource(
        "nfs",
        "storage1",
        {
            **resource.spec,
            "exports": [*resource.spec["exports"], {"name": "backups", "path": "/srv/nfs/backups", "size_mib": None}],
        },
    )
    observed = NfsDriver().observe(more, ctx)
    assert observed is not None and observed.drift == ("export /srv/nfs/backups missing",)
    recorded = {"hash": resource.hash, "spec": dict(resource.spec)}
    assert NfsDriver().diff(more, observed, recorded).action is Action.UPDATE
    before = len(node.calls)
    NfsDriver().apply(Change(more, Action.UPDATE), ctx)
    assert ("systemctl", "reload", "nfs-ganesha.service") in node.calls[before:]
    assert ("systemctl", "restart", "nfs-ganesha.service") not in node.calls[before:]

    v4 = Resource("nfs", "storage1", {**more.spec, "versions": [4]})
    before = len(node.calls)
    NfsDriver().apply(Change(v4, Action.UPDATE), ctx)
    assert ("systemctl", "restart", "nfs-ganesha.service") in node.calls[before:]
    assert ("systemctl", "enable", "--now", "rpcbind.service") not in node.calls[before:]


def test_observe_reports_stopped_service(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node, running = ganesha_node()
    ctx = ctx_for(lab, node, tmp_path)
    NfsDriver().apply(Change(resource, Action.CREATE), ctx)
    running.discard("rpcbind.service")
    running.discard("nfs-ganesha.service")
    observed = NfsDriver().observe(resource, ctx)
    assert observed is not None
    assert observed.drift == ("nfs-ganesha.service is not running", "rpcbind.service is not running (NFSv3 needs it)")


def test_stock_config_is_not_ours_but_not_foreign(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node, _ = ganesha_node()
    node.files[CONF_PATH] = "# stock file\n# EXPORT { Export_Id = 1; }\n"
    assert NfsDriver().observe(resource, ctx_for(lab, node, tmp_path)) is None
    node2, _ = ganesha_node(active={"nfs-ganesha.service"})
    node2.files[CONF_PATH] = 'EXPORT { Export_Id = 9; Path = "/data"; FSAL { Name = VFS; } }\n'
    observed = NfsDriver().observe(resource, ctx_for(lab, node2, tmp_path))
    assert observed is not None and not observed.owned
    with pytest.raises(PlanError, match="not owned by this lab"):
        NfsDriver().diff(resource, observed, None)


def test_delete_stops_and_removes_only_ours(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node, running = ganesha_node()
    ctx = ctx_for(lab, node, tmp_path)
    NfsDriver().apply(Change(resource, Action.CREATE), ctx)
    NfsDriver().delete(resource.id, {"name": "storage1", "spec": dict(resource.spec)}, ctx)
    assert ("systemctl", "disable", "--now", "nfs-ganesha.service") in node.calls
    assert CONF_PATH not in node.files and DROPIN_PATH not in node.files and "nfs-ganesha.service" not in running
    NfsDriver().delete(resource.id, {"name": "storage1", "spec": dict(resource.spec)}, ctx)  # idempotent


def test_missing_ganesha_is_a_plan_error(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    node, _ = ganesha_node()
    del node.files["/usr/bin/ganesha.nfsd"]
    with pytest.raises(PlanError, match="nfs-ganesha"):
        NfsDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))


def test_state_drift_is_pure() -> None:
    want = {"core": {"a": 1}, "exports": {"/x": {"id": "1"}, "/y": {"id": "2"}}}
    have = {"core": {"a": 2}, "exports": {"/x": {"id": "3"}, "/z": {}}}
    assert state_drift(want, have) == [
        "core: {'a': 2} != {'a': 1}",
        "export /x: {'id': '3'} != {'id': '1'}",
        "export /y missing",
        "export /z is not in the lab file",
    ]
