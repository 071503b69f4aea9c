"""NFS role driver with the ganesha backend: golden ganesha.conf, the parser, apply/observe/diff/delete on a fake
node (rpcbind for v3, reload on export changes, restart on core changes, a second `up` plans nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacklab.drivers.base import DriverContext, driver_for
from stacklab.drivers.storage.nfs.driver import NfsDriver, nfs_layout, outputs_of
from stacklab.drivers.storage.nfs.ganesha import (
    CONF_PATH,
    DROPIN_PATH,
    RPCBIND_DROPIN_PATH,
    foreign_listeners,
    ganesha_state,
    parse_ganesha_blocks,
    render_dropin,
    render_ganesha_conf,
    render_rpcbind_dropin,
)
from stacklab.drivers.storage.nfs.types import state_drift
from stacklab.errors import PlanError, StackLabError
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


# `ss -Hltn` on storage1 of the running aio lab before the fix (issue 11), and as it must look after it.
AIO_SS_BEFORE = """\
LISTEN 0 4096 0.0.0.0:111 0.0.0.0:*
LISTEN 0 4096 0.0.0.0:20048 0.0.0.0:*
LISTEN 0 4096 0.0.0.0:2049 0.0.0.0:*
LISTEN 0 128 0.0.0.0:22 0.0.0.0:*
LISTEN 0 64 0.0.0.0:34957 0.0.0.0:*
LISTEN 0 4096 172.29.244.21:3260 0.0.0.0:*
LISTEN 0 4096 [::]:111 [::]:*
LISTEN 0 128 [::]:22 [::]:*
LISTEN 0 64 [::]:38453 [::]:*
"""
FIXED_SS = """\
LISTEN 0 4096 127.0.0.1:111 0.0.0.0:*
LISTEN 0 4096 172.29.244.21:111 0.0.0.0:*
LISTEN 0 4096 [::ffff:172.29.244.21]:2049 *:*
LISTEN 0 4096 [::ffff:172.29.244.21]:20048 *:*
LISTEN 0 128 0.0.0.0:22 0.0.0.0:*
LISTEN 0 4096 172.29.244.21:3260 0.0.0.0:*
"""


def ganesha_node(active: set[str] | None = None) -> tuple[FakeNode, set[str]]:
    node = FakeNode(files={"/usr/bin/ganesha.nfsd": ""})
    running = set() if active is None else active

    masked: set[str] = set()

    def systemctl(argv: tuple[str, ...]) -> CommandResult:
        verb, unit = argv[1], argv[-1]
        if verb in ("start", "restart") or (verb == "enable" and "--now" in argv):
            running.update(a for a in argv[2:] if not a.startswith("-"))
        if verb in ("stop",) or (verb in ("disable", "mask") and "--now" in argv):
            running.discard(unit)
        if verb == "mask":
            masked.add(unit)
        if verb == "unmask":
            masked.discard(unit)
        if verb == "is-enabled":
            return CommandResult(
                argv, 0 if unit not in masked else 1, "masked\n" if unit in masked else "enabled\n", "", 0
            )
        rc = 3 if verb == "is-active" and unit not in running else 0
        return CommandResult(argv, rc, "", "", 0.0)

    node.expect(["systemctl"], responder=systemctl)
    node.expect(["ss", "-Hltn"], stdout=FIXED_SS)
    return node, running


def ctx_for(lab: Lab, node: FakeRunner, state_dir: Path) -> DriverContext:
    return DriverContext(lab=lab, runner=FakeRunner(), state_dir=state_dir, node_runner=lambda _n: node)


def test_conf_golden_and_policy(lab: Lab, resource: Resource) -> None:
    plan = nfs_layout(resource.id, resource.name, resource.spec, lab.name)
    text = render_ganesha_conf(plan)
    check_golden("storage/ganesha-aio.conf", text)
    check_golden("storage/ganesha-dropin.conf", render_dropin(plan))
    check_golden("storage/rpcbind-socket-dropin.conf", render_rpcbind_dropin(plan))
    assert "RestrictAddressFamilies" not in render_dropin(plan)  # its IPv4 fallback binds INADDR_ANY
    rpcbind = render_rpcbind_dropin(plan)
    assert "ListenStream=172.29.244.21:111" in rpcbind and "0.0.0.0" not in rpcbind and "[::]" not in rpcbind
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
    enable_rpcbind = ("systemctl", "enable", "--now", "rpcbind.socket", "rpcbind.service")
    start = node.calls.index(("systemctl", "start", "nfs-ganesha.service"))
    assert node.calls.index(enable_rpcbind) < start
    assert node.files[CONF_PATH] == render_ganesha_conf(nfs_layout(resource.id, resource.name, resource.spec, lab.name))
    assert running == {"rpcbind.socket", "rpcbind.service", "nfs-ganesha.service", "stacklab-filter-nfs.service"}
    assert "After=network-online.target" in node.files[DROPIN_PATH]
    assert node.calls.index(("systemctl", "daemon-reload")) < start
    # rpcbind's socket on the storage address (restarted with the service stopped), statd masked, before ganesha
    assert node.files[RPCBIND_DROPIN_PATH] == render_rpcbind_dropin(
        nfs_layout(resource.id, "storage1", resource.spec, lab.name)
    )
    assert node.calls.index(("systemctl", "stop", "rpcbind.service")) < node.calls.index(
        ("systemctl", "restart", "rpcbind.socket")
    )
    assert node.calls.index(("systemctl", "mask", "--now", "nfs-ganesha-lock.service")) < start

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
    assert ("systemctl", "enable", "--now", "rpcbind.socket", "rpcbind.service") not in node.calls[before:]


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
    assert RPCBIND_DROPIN_PATH not in node.files and ("systemctl", "unmask", "nfs-ganesha-lock.service") in node.calls
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


def test_listeners_beyond_the_storage_address_are_found_in_the_recorded_aio_listing() -> None:
    """Issue 11: on the running aio lab ganesha listened on 0.0.0.0:2049/20048 and rpcbind on *:111."""
    ports = (2049, 20048, 111)
    assert foreign_listeners(AIO_SS_BEFORE, "172.29.244.21", ports) == [
        "0.0.0.0:111",
        "0.0.0.0:20048",
        "0.0.0.0:2049",
        "[::]:111",
    ]
    assert foreign_listeners(FIXED_SS, "172.29.244.21", ports) == ["127.0.0.1:111"]  # loopback: allowed for rpcbind


def test_ganesha_on_every_address_fails_the_apply_and_shows_as_drift(
    lab: Lab, resource: Resource, tmp_path: Path
) -> None:
    """Before the fix `ensure` only logged a listener on 0.0.0.0 (and the drop-in made ganesha bind it)."""
    node, _running = ganesha_node()
    prefer = node.rules.pop()  # the scripted `ss` answer: replace it with the aio listing from before the fix
    assert prefer.prefix == ("ss", "-Hltn")
    node.expect(["ss", "-Hltn"], stdout=AIO_SS_BEFORE)
    with pytest.raises(StackLabError, match=r"NFS listens on 0.0.0.0:111, 0.0.0.0:20048, 0.0.0.0:2049, \[::\]:111"):
        NfsDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))
    observed = NfsDriver().observe(resource, ctx_for(lab, node, tmp_path))
    assert observed is not None
    assert "NFS listens beyond 172.29.244.21: 0.0.0.0:111, 0.0.0.0:20048, 0.0.0.0:2049, [::]:111" in observed.drift


def test_the_nfs_filter_covers_pinned_statd_and_lockd_ports(lab: Lab, resource: Resource, tmp_path: Path) -> None:
    """Issue 11: rpc.statd listened on a random port outside the storage-network filter. knfsd's nfs.conf pins
    statd and lockd; the filter the NFS driver installs names the same ports (ganesha runs no statd at all)."""
    from stacklab.drivers.nodes.firewall import rules_path
    from stacklab.drivers.storage.nfs.knfsd import render_nfs_conf

    node, _running = ganesha_node()
    NfsDriver().apply(Change(resource, Action.CREATE), ctx_for(lab, node, tmp_path))
    rules = node.files[rules_path("nfs")]
    assert "tcp dport { 111, 2049, 20048, 32765, 32768 } ip saddr != 172.29.244.0/24" in rules
    assert "udp dport { 111, 2049, 20048, 32765, 32768 } ip saddr != 172.29.244.0/24" in rules
    knfsd = render_nfs_conf(nfs_layout(resource.id, resource.name, resource.spec, lab.name))
    assert "[statd]\nport=32765\n" in knfsd and "[lockd]\nport=32768\nudp-port=32768\n" in knfsd
