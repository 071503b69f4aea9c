"""The VM driver against libvirt's test:///default driver: define, observe, apply, delete, clean up on failure.

No guest boots: the test driver keeps domains and pools in memory. The base disk, seed and readiness steps
are injected (they need a real rootfs, an ISO tool and a booted guest; the integration test covers them).
"""

from __future__ import annotations

import dataclasses
import stat
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest.mock import patch

import libvirt
import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.nodes import vm_ready
from stacklab.drivers.nodes.image import current_entry
from stacklab.drivers.nodes.libvirt_config import DomainConfig
from stacklab.drivers.nodes.libvirt_storage import StoragePoolConfig
from stacklab.drivers.nodes.vm import SHARED_CONN, SHARED_URI, VmDriver
from stacklab.drivers.nodes.vm_disk import BaseDisk
from stacklab.drivers.nodes.vm_domain import VmLayout, build_domain, domain_name, image_hash_of_kernel, pool_name
from stacklab.drivers.nodes.vm_libvirt import grant_qemu_traversal
from stacklab.drivers.nodes.vm_ready import ReadyTarget
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult, Runner
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Change, Resource

LAB_TEMPLATE = """
name: {name}
networks:
  mgmt: {{bridge: br-mgmt, cidr: 10.250.1.0/24}}
  storage: {{bridge: br-storage, cidr: 10.250.2.0/24}}
images:
  base: {{recipe: debian-12-base}}
nodes:
  n1:
    kind: vm
    image: base
    memory: 512MiB
    nics: [mgmt, storage]
    disks: [{{name: data, size: 64MiB}}]
  n2:
    kind: vm
    image: base
    memory: 512MiB
    nics: [mgmt]
"""


@pytest.fixture
def conn() -> Iterator[Any]:
    connection = libvirt.open("test:///default")
    yield connection
    connection.close()


@pytest.fixture
def lab_name() -> str:
    # test:///default is one in-memory host per process: unique names keep tests apart
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ctx(tmp_path: Path, conn: Any, lab_name: str) -> Iterator[DriverContext]:
    lab = load_lab_text(LAB_TEMPLATE.format(name=lab_name), "t.yml")
    rootfs = tmp_path / "images/base/rootfs"
    # the hash the lab's recipe resolves to: nodes compare the image they boot with it
    entry = current_entry(DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path), "base")
    assert entry is not None
    context = DriverContext(
        lab=lab,
        runner=FakeRunner(),
        state_dir=tmp_path / "state",
        outputs={
            "image/base": {"rootfs": str(rootfs), "hash": entry.hash},
            f"sshkey/{lab_name}": {"private_key": str(tmp_path / "id"), "public_key": "ssh-ed25519 AAAA test"},
        },
        shared={SHARED_URI: "test:///default", SHARED_CONN: conn},
    )
    yield context
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(f"stacklab-{lab_name}-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for pool in conn.listAllStoragePools(0):
        if pool.name() == pool_name(lab_name):
            if pool.isActive():
                pool.destroy()
            pool.undefine()


def resource(ctx: DriverContext, node: str) -> Resource:
    return next(r for r in expand(ctx.lab, {"node_kind": "vm", "accel": "tcg"}) if r.id == f"node/{node}")


class Fakes:
    """Stand-ins for the steps that need a real rootfs, ISO tool and guest; they record their calls."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.seeds: list[dict[str, Any]] = []
        self.ready: list[ReadyTarget] = []
        self.fail_ready = False

    def base_disk(self, rootfs: Path, image_hash: str, runner: Runner, *, progress: Any) -> BaseDisk:
        d = self.tmp_path / f"images/base/vm-{image_hash}"
        return BaseDisk(d, d / "base.qcow2", d / "vmlinuz", d / "initrd.img", "6.1.0-test", 2 * 1024**3, image_hash)

    def seed_writer(self, *, dest: Path, **kwargs: Any) -> Mapping[str, str]:
        dest.write_text("cidata")
        self.seeds.append({"dest": dest, **kwargs})
        return {}

    def ready_waiter(self, target: ReadyTarget, *, budget: float, runner: Runner) -> None:
        assert target.is_alive()
        self.ready.append(target)
        if self.fail_ready:
            raise StackLabError(f"VM {target.node}: SSH did not answer (test)")

    def driver(self) -> VmDriver:
        return VmDriver(
            seed_writer=self.seed_writer, base_disk=self.base_disk, ready_waiter=self.ready_waiter, release_daemon=False
        )


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path)


def define_as_driver_would(conn: Any, ctx: DriverContext, node: str, *, lab: str | None = None) -> Any:
    res = resource(ctx, node)
    config = build_domain(
        lab=lab or ctx.lab.name,
        node=node,
        spec=res.spec,
        spec_hash=res.hash,
        layout=VmLayout(ctx.state_dir, node),
        kernel="/k/vmlinuz",
        initrd="/k/initrd.img",
        virt_type="qemu",
    )
    # same name as ours, whoever's mark it carries
    return conn.defineXML(dataclasses.replace(config, name=domain_name(ctx.lab.name, node)).to_xml())


def names(conn: Any, lab: str) -> tuple[list[str], list[str]]:
    doms = sorted(d.name() for d in conn.listAllDomains(0) if d.name().startswith(f"stacklab-{lab}-"))
    pools = sorted(p.name() for p in conn.listAllStoragePools(0) if p.name() == pool_name(lab))
    return doms, pools


def test_observe_defined_domain_owned_stopped_then_running(conn: Any, ctx: DriverContext, fakes: Fakes) -> None:
    driver = fakes.driver()
    res = resource(ctx, "n1")
    assert driver.observe(res, ctx) is None
    dom = define_as_driver_would(conn, ctx, "n1")
    observed = driver.observe(res, ctx)
    assert observed is not None and observed.owned
    assert observed.drift == ("stopped",)
    assert observed.facts["macs"] == [n["mac"] for n in res.spec["nics"]]
    assert driver.diff(res, observed, {"hash": res.hash, "spec": res.spec}).action is Action.UPDATE
    dom.create()
    observed = driver.observe(res, ctx)
    assert observed is not None and observed.drift == () and observed.facts["state"] == "running"
    assert driver.diff(res, observed, {"hash": res.hash, "spec": res.spec}).action is Action.NOOP


def test_a_domain_booting_another_image_build_drifts_and_is_recreated(
    conn: Any, ctx: DriverContext, fakes: Fakes
) -> None:
    """The recipe now gives another hash than the domain's kernel path: the same `up` replaces the VM."""
    driver = fakes.driver()
    res = resource(ctx, "n1")
    first = driver.apply(driver.diff(res, None, None), ctx)
    old_hash = ctx.outputs["image/base"]["hash"]
    assert image_hash_of_kernel(f"/cache/debian-12-base-{old_hash}/vm-{old_hash}/vmlinuz") == old_hash
    assert image_hash_of_kernel("/boot/vmlinuz") is None
    new_hash = "feedfacefeedface"
    ctx.outputs = {**ctx.outputs, "image/base": {**ctx.outputs["image/base"], "hash": new_hash}}
    entry = current_entry(ctx, "base")
    assert entry is not None
    with patch("stacklab.drivers.nodes.vm.current_entry", return_value=dataclasses.replace(entry, hash=new_hash)):
        observed = driver.observe(res, ctx)
        assert observed is not None
        assert observed.drift == (f"image changed: built from {old_hash}, the recipe now gives {new_hash}",)
        change = driver.diff(res, observed, {"hash": res.hash, "spec": dict(res.spec), "outputs": first})
        assert change.action is Action.UPDATE
        driver.apply(change, ctx)
        kernel = DomainConfig.parse(conn.lookupByName(domain_name(ctx.lab.name, "n1")).XMLDesc(0)).kernel
        assert image_hash_of_kernel(kernel) == new_hash
        observed = driver.observe(res, ctx)
        assert observed is not None and observed.drift == ()


def test_domain_with_our_name_but_not_our_mark_is_foreign(conn: Any, ctx: DriverContext, fakes: Fakes) -> None:
    driver = fakes.driver()
    res = resource(ctx, "n1")
    define_as_driver_would(conn, ctx, "n1", lab="someone-else")
    observed = driver.observe(res, ctx)
    assert observed is not None and not observed.owned
    with pytest.raises(PlanError, match="not owned"):
        driver.diff(res, observed, None)
    # delete leaves a foreign domain alone and still succeeds
    driver.delete(res.id, {"outputs": {}}, ctx)
    assert names(conn, ctx.lab.name)[0] == [domain_name(ctx.lab.name, "n1")]
    # and apply refuses to replace it
    with pytest.raises(PlanError, match="not owned"):
        driver.apply(Change(res, Action.CREATE), ctx)


def test_delete_destroys_undefines_and_is_idempotent(conn: Any, ctx: DriverContext, fakes: Fakes) -> None:
    driver = fakes.driver()
    define_as_driver_would(conn, ctx, "n1").create()
    driver.delete("node/n1", {"outputs": {"domain": domain_name(ctx.lab.name, "n1")}}, ctx)
    assert names(conn, ctx.lab.name) == ([], [])
    driver.delete("node/n1", {"outputs": {}}, ctx)  # already gone: fine


def test_apply_creates_pool_volumes_seed_and_running_domain(conn: Any, ctx: DriverContext, fakes: Fakes) -> None:
    driver = fakes.driver()
    out: dict[str, Mapping[str, Any]] = {}
    for node in ("n1", "n2"):
        out[node] = driver.apply(Change(resource(ctx, node), Action.CREATE), ctx)
    lab = ctx.lab.name
    assert names(conn, lab) == ([f"stacklab-{lab}-n1", f"stacklab-{lab}-n2"], [f"stacklab-{lab}"])
    pool = conn.storagePoolLookupByName(pool_name(lab))
    assert StoragePoolConfig.parse(pool.XMLDesc(0)).path == str(ctx.state_dir / "vm/pool")
    assert {"n1.root.qcow2", "n1.disk-data.qcow2", "n2.root.qcow2"} <= set(pool.listVolumes())
    root = pool.storageVolLookupByName("n1.root.qcow2").XMLDesc(0)
    assert f"vm-{ctx.outputs['image/base']['hash']}/base.qcow2" in root  # overlay backed by the cached base disk
    n1 = out["n1"]
    assert n1["kind"] == "vm" and n1["accel"] == "tcg" and n1["domain"] == f"stacklab-{lab}-n1"
    assert n1["ssh"]["host"] == n1["addresses"]["mgmt"] and n1["ssh"]["key"].endswith("/id")
    assert n1["disks"] == {"data": "/dev/vdb"}
    assert [t.host for t in fakes.ready] == [out["n1"]["addresses"]["mgmt"], out["n2"]["addresses"]["mgmt"]]
    seed = fakes.seeds[0]
    assert seed["public_key"] == "ssh-ed25519 AAAA test" and seed["node_name"] == "n1"
    assert set(seed["hosts"]) == {"n1", "n2"} and Path(seed["dest"]).name == "n1.seed.iso"
    assert conn.lookupByName(f"stacklab-{lab}-n1").isActive()

    # a second apply of the unchanged, running node reuses it (start + readiness only)
    again = driver.apply(Change(resource(ctx, "n1"), Action.UPDATE, ("owned but not recorded: adopting",)), ctx)
    assert again["domain"] == n1["domain"] and len(fakes.seeds) == 2

    # deleting one node keeps the pool for the other; the last one takes the pool with it
    driver.delete("node/n1", {"outputs": n1}, ctx)
    assert names(conn, lab) == ([f"stacklab-{lab}-n2"], [f"stacklab-{lab}"])
    assert not any(v.startswith("n1.") for v in pool.listVolumes())
    driver.delete("node/n2", {"outputs": out["n2"]}, ctx)
    assert names(conn, lab) == ([], [])
    assert not (ctx.state_dir / "vm").exists()


def test_failed_readiness_leaves_nothing_but_the_console_log(conn: Any, ctx: DriverContext, fakes: Fakes) -> None:
    fakes.fail_ready = True
    driver = fakes.driver()
    layout = VmLayout(ctx.state_dir, "n1")
    with pytest.raises(StackLabError, match="SSH did not answer"):
        driver.apply(Change(resource(ctx, "n1"), Action.CREATE), ctx)
    assert names(conn, ctx.lab.name) == ([], [])
    assert not layout.pool_dir.exists()
    assert layout.node_dir.is_dir()  # kept for the console log the error points to


def test_stopped_domain_is_started_again(conn: Any, ctx: DriverContext, fakes: Fakes) -> None:
    driver = fakes.driver()
    res = resource(ctx, "n2")
    first = driver.apply(Change(res, Action.CREATE), ctx)
    dom = conn.lookupByName(first["domain"])
    dom.destroy()
    observed = driver.observe(res, ctx)
    assert observed is not None and observed.drift == ("stopped",)
    change = driver.diff(res, observed, {"hash": res.hash, "spec": dict(res.spec), "outputs": first})
    assert change.action is Action.UPDATE
    driver.apply(change, ctx)
    assert dom.isActive() and len(fakes.seeds) == 1  # same domain, no new seed


def test_pool_with_our_name_elsewhere_is_not_touched(
    conn: Any, ctx: DriverContext, fakes: Fakes, tmp_path: Path
) -> None:
    foreign = StoragePoolConfig(name=pool_name(ctx.lab.name), path=str(tmp_path / "elsewhere"))
    pool = conn.storagePoolDefineXML(foreign.to_xml(), 0)
    pool.create(0)
    driver = fakes.driver()
    with pytest.raises(PlanError, match="another path"):
        driver.apply(Change(resource(ctx, "n2"), Action.CREATE), ctx)
    driver.delete("node/n2", {"outputs": {}}, ctx)
    assert conn.storagePoolLookupByName(pool_name(ctx.lab.name)).isActive()


def test_qemu_gets_search_but_not_read_permission_on_the_lab_dir(tmp_path: Path) -> None:
    """The engine keeps the lab state dir 0700; QEMU (libvirt-qemu) must still reach the pool inside it."""
    state = tmp_path / "lab"
    layout = VmLayout(state, "n1")
    layout.pool_dir.mkdir(parents=True)
    layout.node_dir.mkdir()
    state.chmod(0o700)
    for directory in (layout.vm_dir, layout.pool_dir, layout.node_dir):
        directory.chmod(0o700)
    secret = state / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    grant_qemu_traversal(state, layout)
    for directory in (state, layout.vm_dir, layout.pool_dir, layout.node_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o701
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    grant_qemu_traversal(state, layout)  # idempotent
    assert stat.S_IMODE(state.stat().st_mode) == 0o701


def _ssh_responder(answers: list[tuple[int, str, str]]) -> Any:
    def respond(argv: tuple[str, ...]) -> CommandResult:
        rc, out, err = answers.pop(0)
        return CommandResult(argv, rc, out, err, 0.0)

    return respond


def _target() -> ReadyTarget:
    return ReadyTarget("vm1", "10.0.0.10", "root", 22, "/k", Path("/nonexistent/console.log"), lambda: True)


def test_cloud_init_wait_retries_when_ssh_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    """ssh's 255 (connection dropped, e.g. sshd restarted by cloud-init) is retried, not cloud-init's verdict."""

    monkeypatch.setattr("stacklab.drivers.nodes.vm_ready.time.sleep", lambda _s: None)
    answers = [(255, "", "Connection closed by 10.0.0.10 port 22"), (0, "status: done\n", "")]
    runner = FakeRunner().expect(["ssh"], responder=_ssh_responder(answers))
    vm_ready.wait_cloud_init(_target(), deadline=time.monotonic() + 60, budget=60, runner=runner)
    assert len(runner.calls) == 2 and all("--wait" in c[-1] for c in runner.calls)


def test_cloud_init_error_names_the_status_and_its_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:

    answers = [(1, "status: error\n", ""), (1, "status: error\nerrors:\n  - boom\n", "")]
    runner = FakeRunner().expect(["ssh"], responder=_ssh_responder(answers))
    with pytest.raises(StackLabError, match=r"(?s)status rc 1.*boom"):
        vm_ready.wait_cloud_init(_target(), deadline=time.monotonic() + 60, budget=60, runner=runner)


def test_cloud_init_wait_gives_up_on_ssh_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:

    runner = FakeRunner().expect(["ssh"], rc=255, stderr="Connection refused")
    with pytest.raises(StackLabError, match=r"SSH kept failing.*Connection refused"):
        vm_ready.wait_cloud_init(_target(), deadline=time.monotonic() + 1, budget=1, runner=runner)


def test_a_labs_own_cloud_init_templates_seed_its_nodes(
    tmp_path: Path, conn: Any, ctx: DriverContext, fakes: Fakes
) -> None:
    """A lab kept outside the checkout with its own cloud-init/ beside it: the node's seed comes from those templates
    (before, the node drivers passed no lab directory and the templates were looked up from the current directory)."""
    import dataclasses
    import shutil

    from stacklab.drivers.nodes.seed import SEED_FILES, find_templates_dir

    own = tmp_path / "mylab"
    shutil.copytree(find_templates_dir(), own / "cloud-init")
    assert {p.name for p in (own / "cloud-init").iterdir()} >= set(SEED_FILES)
    lab = ctx.lab.model_copy(update={"source": str(own / "lab.yml")})
    mine = dataclasses.replace(ctx, lab=lab)
    assert mine.lab_file_dir == own
    fakes.driver().apply(Change(resource(mine, "n1"), Action.CREATE), mine)
    assert fakes.seeds[0]["templates_dir"] == own / "cloud-init"


def test_the_ready_budget_can_be_raised_for_a_loaded_host_and_bad_values_are_refused() -> None:
    from stacklab.drivers.nodes.vm import READY_BUDGET, ready_budgets
    from stacklab.errors import StackLabError

    assert ready_budgets({}) == dict(READY_BUDGET)
    assert ready_budgets({"STACKLAB_VM_READY_SECONDS": " 1500 "}) == {"qemu": 1500.0, "kvm": 1500.0}
    for bad in ("ten", "0", "-5", "1e9", "nan"):
        with pytest.raises(StackLabError, match="STACKLAB_VM_READY_SECONDS"):
            ready_budgets({"STACKLAB_VM_READY_SECONDS": bad})
