"""The container driver's pure parts (LXC config, names, parsing, cgroup cleanup) and its flow against a FakeRunner.

The golden config is regenerated with STACKLAB_REGEN_GOLDEN=1. Nothing here starts a container: the
integration test (tests/integration/test_container_node.py) boots real ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacklab.drivers.base import DriverContext
from stacklab.drivers.nodes.container import ContainerDriver, ReadyBudgets
from stacklab.drivers.nodes.image import CACHE_ENV, current_entry
from stacklab.drivers.nodes.lxc_config import (
    CGROUP_V1,
    CGROUP_V2,
    SECCOMP_WITH_FILE_HANDLES,
    ContainerLayout,
    cgroup_base,
    container_outputs,
    detect_cgroup_keys,
    marker_of,
    mgmt_nic,
    render_lxc_config,
    rootfs_of,
)
from stacklab.drivers.nodes.lxc_host import cgroup_mounts, parse_lxc_info, remove_cgroup_tree
from stacklab.drivers.nodes.seed import lab_hosts
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Resource
from tests.golden_util import check_golden

LAB = """
name: ctlab
prefix: sct
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.240.1.0/24}
  storage: {bridge: br-storage, cidr: 10.240.2.0/24, mtu: 9000}
images:
  base: {recipe: debian-12-base}
nodes:
  compute1:
    kind: container
    image: base
    cpus: 2
    memory: 3GiB
    nics:
      mgmt: {address: 10.240.1.31}
      storage: {address: 10.240.2.31}
    devices: [kvm, tun, fuse]
  storage1:
    kind: container
    image: base
    memory: 1GiB
    nics: [storage, mgmt]
"""

LXCPATH = Path("/var/lib/stacklab/labs/ctlab/lxc")
ROOTFS = Path("/var/cache/stacklab/images/debian-12-base-0123456789abcdef/rootfs")
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0stacklabtestkeyonlyxxxxxxxxxxxxxxxxxxxxxxx stacklab-ctlab"


def nodes() -> dict[str, Resource]:
    lab = load_lab_text(LAB, "ctlab.yml")
    return {r.name: r for r in expand(lab) if r.kind == "node"}


# ----------------------------------------------------------------------------------------------------
# The config


def test_config_golden() -> None:
    node = nodes()["compute1"]
    layout = ContainerLayout(LXCPATH, "compute1")
    text = render_lxc_config(lab="ctlab", spec=node.spec, layout=layout, rootfs=ROOTFS, cgroup=CGROUP_V1)
    check_golden("lxc/compute1.config", text)


def test_file_handles_feature_relaxes_only_open_by_handle_at() -> None:
    node = nodes()["compute1"]
    spec = {**node.spec, "features": ["file-handles"]}
    layout = ContainerLayout(LXCPATH, "compute1")
    text = render_lxc_config(lab="ctlab", spec=spec, layout=layout, rootfs=ROOTFS, cgroup=CGROUP_V1)
    lines = text.splitlines()
    assert "lxc.rootfs.options = index=on,nfs_export=on" in lines
    profile = f"lxc.seccomp.profile = {LXCPATH}/compute1/seccomp"
    # after the include, so it overrides common.conf's profile
    assert lines.index(profile) > lines.index("lxc.include = /usr/share/lxc/config/common.conf")
    common = Path("/usr/share/lxc/config/common.seccomp")
    if common.exists():  # the host's LXC policy minus exactly one rule
        ours = {line.split("#")[0].strip() for line in SECCOMP_WITH_FILE_HANDLES.splitlines()}
        theirs = {line.split("#")[0].strip() for line in common.read_text().splitlines()}
        assert theirs - ours == {"open_by_handle_at errno 1"} and ours <= theirs
    plain = render_lxc_config(lab="ctlab", spec=node.spec, layout=layout, rootfs=ROOTFS, cgroup=CGROUP_V1)
    assert "seccomp" not in plain and "nfs_export" not in plain


def test_config_shape() -> None:
    node = nodes()["compute1"]
    layout = ContainerLayout(LXCPATH, "compute1")
    text = render_lxc_config(lab="ctlab", spec=node.spec, layout=layout, rootfs=ROOTFS)
    lines = text.splitlines()
    assert lines[0] == "# stacklab-marker: stacklab:ctlab:node:compute1"
    assert marker_of(text) == node.spec["marker"]
    assert rootfs_of(text) == str(ROOTFS)
    assert f"lxc.rootfs.path = overlay:{ROOTFS}:{LXCPATH}/compute1/delta0" in lines
    assert "lxc.include = /usr/share/lxc/config/common.conf" in lines
    assert "lxc.apparmor.profile = unconfined" in lines
    assert "lxc.cgroup.memory.limit_in_bytes = 3221225472" in lines
    assert not [line for line in lines if ".ipv4" in line or ".ipv6" in line]  # cloud-init sets addresses
    for index, nic in enumerate(node.spec["nics"]):
        assert f"lxc.net.{index}.type = veth" in lines
        assert f"lxc.net.{index}.link = {nic['bridge']}" in lines
        assert f"lxc.net.{index}.veth.pair = {nic['host_ifname']}" in lines
        assert f"lxc.net.{index}.hwaddr = {nic['mac']}" in lines
        assert f"lxc.net.{index}.name = eth{index}" in lines
    assert "lxc.net.1.mtu = 9000" in lines
    for major_minor, source in (("10:232", "/dev/kvm"), ("10:200", "/dev/net/tun"), ("10:229", "/dev/fuse")):
        assert f"lxc.cgroup.devices.allow = c {major_minor} rwm" in lines
        assert any(line.startswith(f"lxc.mount.entry = {source} ") and "optional" in line for line in lines)
    base = cgroup_base("ctlab", LXCPATH, "compute1")
    assert f"lxc.cgroup.dir.monitor.pivot = {base}/pivot" in lines
    # Every value line is `key = value` with an lxc.* key.
    for line in lines:
        if line and not line.startswith("#"):
            key, sep, value = line.partition(" = ")
            assert sep and key.startswith("lxc.") and value, line


def test_config_v2_keys_and_no_devices() -> None:
    node = nodes()["storage1"]
    layout = ContainerLayout(LXCPATH, "storage1")
    text = render_lxc_config(lab="ctlab", spec=node.spec, layout=layout, rootfs=ROOTFS, cgroup=CGROUP_V2)
    assert "lxc.cgroup2.memory.max = 1073741824" in text.splitlines()
    assert "devices.allow" not in text
    assert "lxc.mount.entry" not in text
    # storage is its first NIC, but mgmt still carries SSH
    assert mgmt_nic(node.spec)["network"] == "mgmt"


def test_config_without_memory_controller() -> None:
    node = nodes()["storage1"]
    keys = type(CGROUP_V1)(CGROUP_V1.devices_allow, None)
    text = render_lxc_config(
        lab="ctlab", spec=node.spec, layout=ContainerLayout(LXCPATH, "storage1"), rootfs=ROOTFS, cgroup=keys
    )
    assert "memory" not in text


@pytest.mark.parametrize("rootfs", ["/var/cache/my images/rootfs", "/var/cache/a:b/rootfs"])
def test_config_refuses_paths_that_break_overlay_syntax(rootfs: str) -> None:
    node = nodes()["storage1"]
    with pytest.raises(StackLabError, match="cannot go into an LXC config"):
        render_lxc_config(lab="ctlab", spec=node.spec, layout=ContainerLayout(LXCPATH, "storage1"), rootfs=Path(rootfs))


def test_config_refuses_unknown_device() -> None:
    spec = dict(nodes()["storage1"].spec, devices=["gpu"])
    with pytest.raises(PlanError, match="unknown device"):
        render_lxc_config(lab="ctlab", spec=spec, layout=ContainerLayout(LXCPATH, "storage1"), rootfs=ROOTFS)


def test_layout_needs_absolute_lxcpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="absolute"):
        ContainerLayout(Path("lxc"), "n1")
    monkeypatch.chdir(tmp_path)
    layout = ContainerLayout.for_lab(Path(".stacklab/ctlab"), "n1")
    assert layout.lxcpath == tmp_path / ".stacklab/ctlab/lxc"
    assert layout.seed_dir == layout.node_dir / "delta0/var/lib/cloud/seed/nocloud"


def test_cgroup_base_is_per_lab_directory() -> None:
    one = cgroup_base("lab", Path("/a/lxc"), "n1")
    assert one.startswith("stacklab/lab-") and one.endswith("/n1")
    assert one != cgroup_base("lab", Path("/b/lxc"), "n1")
    assert one == cgroup_base("lab", Path("/a/lxc"), "n1")


def test_parse_lxc_info() -> None:
    assert parse_lxc_info("State:          RUNNING\nPID:            26456\n") == ("RUNNING", 26456)
    assert parse_lxc_info("State:          STOPPED\n") == ("STOPPED", None)


def test_outputs_and_hosts() -> None:
    node = nodes()["compute1"]
    out = container_outputs(
        spec=node.spec, layout=ContainerLayout(LXCPATH, "compute1"), key_file="/k", ready_seconds=2.345
    )
    assert out["kind"] == "container"
    assert out["name"] == "compute1"
    assert out["lxcpath"] == str(LXCPATH)
    assert out["addresses"] == {"mgmt": "10.240.1.31", "storage": "10.240.2.31"}
    assert out["ssh"] == {"host": "10.240.1.31", "user": "root", "port": 22, "key": "/k"}
    assert out["ready_seconds"] == 2.35
    ctx = DriverContext(lab=load_lab_text(LAB, "ctlab.yml"), runner=FakeRunner(), state_dir=Path("/x"))
    assert lab_hosts(ctx) == {"compute1": "10.240.1.31", "storage1": "10.240.1.10"}


# ----------------------------------------------------------------------------------------------------
# Host helpers on fake trees


def test_detect_cgroup_keys(tmp_path: Path) -> None:
    hybrid = tmp_path / "hybrid"
    (hybrid / "memory").mkdir(parents=True)
    (hybrid / "memory/memory.limit_in_bytes").write_text("9223372036854771712\n")
    (hybrid / "devices").mkdir()
    (hybrid / "devices/devices.allow").write_text("")
    assert detect_cgroup_keys(hybrid) == CGROUP_V1
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert detect_cgroup_keys(unified) == CGROUP_V2
    bare = tmp_path / "bare"
    bare.mkdir()
    assert detect_cgroup_keys(bare).memory_limit is None


def test_cgroup_mounts(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
        "proc /proc proc rw 0 0\n"
    )
    assert cgroup_mounts(mounts) == [Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup/unified")]


def test_remove_cgroup_tree_only_ours(tmp_path: Path) -> None:
    mounts = [tmp_path / "memory", tmp_path / "pids"]
    base = "stacklab/lab-abc123/n1"
    for mount in mounts:
        (mount / base / "pivot/lxc.pivot").mkdir(parents=True)
        (mount / "stacklab/lab-abc123/n2/payload").mkdir(parents=True)  # another node of the lab
        (mount / "lxc.pivot").mkdir(exist_ok=True)  # someone else's: never touched
    (mounts[1] / base / "payload").mkdir()
    (mounts[1] / base / "payload/cgroup.procs").write_text("123\n")  # stands in for a busy cgroup
    left = remove_cgroup_tree(base, mounts)
    assert left == [mounts[1] / base / "payload", mounts[1] / base]
    assert not (mounts[0] / base).exists()
    for mount in mounts:
        assert (mount / "lxc.pivot").is_dir()
        assert (mount / "stacklab/lab-abc123/n2/payload").is_dir()
    (mounts[1] / base / "payload/cgroup.procs").unlink()
    (mounts[1] / "stacklab/lab-abc123/n2/payload").rmdir()
    (mounts[1] / "stacklab/lab-abc123/n2").rmdir()
    assert remove_cgroup_tree(base, mounts) == []
    assert not (mounts[1] / "stacklab").exists()  # emptied parents go too
    with pytest.raises(ValueError, match="not a stacklab tree"):
        remove_cgroup_tree("lxc.payload.n1", mounts)


# ----------------------------------------------------------------------------------------------------
# The driver against a FakeRunner (lxc-* commands scripted, SSH injected)


class FakeLxc:
    """Scripts lxc-info/lxc-start/lxc-attach/lxc-stop/lxc-destroy for one container, tracking its state."""

    def __init__(self, runner: FakeRunner, cloud_init: str = "status: done\n") -> None:
        self.state = "MISSING"
        runner.expect(["lxc-info"], responder=self.info)
        runner.expect(["lxc-start"], responder=self.start)
        runner.expect(
            ["lxc-attach"], responder=lambda argv: self.result(argv, 0 if "done" in cloud_init else 1, cloud_init)
        )
        runner.expect(["lxc-stop"], responder=self.stop)
        runner.expect(["lxc-destroy"], responder=self.destroy)

    @staticmethod
    def result(argv: tuple[str, ...], rc: int = 0, stdout: str = "", stderr: str = "") -> CommandResult:
        return CommandResult(argv, rc, stdout, stderr, 0.0)

    def info(self, argv: tuple[str, ...]) -> CommandResult:
        if self.state == "MISSING":
            return self.result(argv, 1, stderr=f"{argv[4]} doesn't exist\n")
        pid = "\nPID:            4242" if self.state == "RUNNING" else ""
        return self.result(argv, 0, f"State:          {self.state}{pid}\n")

    def start(self, argv: tuple[str, ...]) -> CommandResult:
        self.state = "RUNNING"
        return self.result(argv)

    def stop(self, argv: tuple[str, ...]) -> CommandResult:
        self.state = "STOPPED"
        return self.result(argv)

    def destroy(self, argv: tuple[str, ...]) -> CommandResult:
        self.state = "MISSING"
        return self.result(argv)


@pytest.fixture
def fake_ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DriverContext:
    lab = load_lab_text(LAB, "ctlab.yml")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    # the rootfs the lab's recipe resolves to (nodes compare their overlay's lower dir with it)
    rootfs = current_entry(DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path), "base").rootfs  # type: ignore[union-attr]
    rootfs.mkdir(parents=True)
    key = tmp_path / "id_ed25519"
    key.write_text("private\n")
    outputs = {
        "image/base": {"rootfs": str(rootfs), "hash": "h", "manifest": ""},
        "sshkey/ctlab": {"private_key": str(key), "public_key": PUBLIC_KEY},
    }
    return DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path / "state", outputs=outputs)


def make_driver(tmp_path: Path, ssh_calls: list[str], ssh: Callable[..., float] | None = None) -> ContainerDriver:
    def fake_ssh(host: str, key_file: Path, budget: float, **_: Any) -> float:
        ssh_calls.append(host)
        return 0.01

    return ContainerDriver(
        budgets=ReadyBudgets(running=1, cloud_init=5, ssh=1, cleanup=1),
        ssh_waiter=ssh or fake_ssh,
        cgroup_keys=lambda: CGROUP_V1,
        cgroup_mounts=lambda: [tmp_path / "cgroup/memory"],
        link_exists=lambda _name: False,
        poll_interval=0.01,
    )


def test_apply_observe_delete(fake_ctx: DriverContext, tmp_path: Path) -> None:
    assert isinstance(fake_ctx.runner, FakeRunner)
    lxc = FakeLxc(fake_ctx.runner)
    ssh_calls: list[str] = []
    driver = make_driver(tmp_path, ssh_calls)
    node = nodes()["compute1"]
    assert driver.observe(node, fake_ctx) is None

    outputs = driver.apply(driver.diff(node, None, None), fake_ctx)
    layout = ContainerLayout.for_lab(fake_ctx.state_dir, "compute1")
    assert outputs["ssh"]["host"] == "10.240.1.31" and ssh_calls == ["10.240.1.31"]
    assert marker_of(layout.config.read_text()) == node.spec["marker"]
    assert json.loads(layout.meta.read_text())["marker"] == node.spec["marker"]
    network = yaml.safe_load((layout.seed_dir / "network-config").read_text())
    assert network["ethernets"]["eth0"]["match"]["macaddress"] == node.spec["nics"][0]["mac"]
    assert PUBLIC_KEY in (layout.seed_dir / "user-data").read_text()
    started = [c for c in fake_ctx.runner.calls if c[0] == "lxc-start"]
    assert started == [("lxc-start", "-P", str(layout.lxcpath), "-n", "compute1", "-d")]

    observed = driver.observe(node, fake_ctx)
    assert observed is not None and observed.owned and observed.drift == ()
    assert observed.facts["state"] == "running" and observed.facts["pid"] == 4242
    recorded = {"spec": dict(node.spec), "hash": node.hash, "outputs": dict(outputs)}
    assert driver.diff(node, observed, recorded).action is Action.NOOP

    lxc.state = "STOPPED"
    observed = driver.observe(node, fake_ctx)
    assert observed is not None and observed.drift == ("stopped",)
    change = driver.diff(node, observed, recorded)
    assert change.action is Action.UPDATE
    driver.apply(change, fake_ctx)  # same config: starts the same container again
    assert lxc.state == "RUNNING"
    assert len([c for c in fake_ctx.runner.calls if c[0] == "lxc-start"]) == 2
    assert not [c for c in fake_ctx.runner.calls if c[0] == "lxc-destroy"]

    driver.delete(node.id, recorded, fake_ctx)
    assert lxc.state == "MISSING"
    assert not layout.node_dir.exists()
    assert not layout.lxcpath.exists()
    driver.delete(node.id, recorded, fake_ctx)  # already gone: fine


def test_a_recipe_edit_is_drift_before_the_image_is_rebuilt(
    fake_ctx: DriverContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node sees the new recipe hash at plan time, so the `up` that rebuilds the image also replaces it."""
    FakeLxc(fake_ctx.runner)  # type: ignore[arg-type]
    driver = make_driver(tmp_path, [])
    node = nodes()["compute1"]
    driver.apply(driver.diff(node, None, None), fake_ctx)
    images = tmp_path / "images"
    images.mkdir()
    for recipe in (Path(__file__).resolve().parents[2] / "images").glob("*.yml"):
        (images / recipe.name).write_text(recipe.read_text())
    edited = images / "debian-12-base.yml"
    recipe_data = yaml.safe_load(edited.read_text())
    edited.write_text(yaml.safe_dump({**recipe_data, "packages": [*recipe_data["packages"], "htop"]}))
    monkeypatch.setattr("stacklab.drivers.nodes.image.images_dir_for", lambda _ctx: images)
    new = current_entry(fake_ctx, "base")
    assert new is not None and str(new.rootfs) != fake_ctx.outputs["image/base"]["rootfs"]
    observed = driver.observe(node, fake_ctx)
    assert observed is not None and len(observed.drift) == 1
    assert observed.drift[0].startswith("image rootfs changed:") and str(new.rootfs) in observed.drift[0]


def test_foreign_container_is_not_owned(fake_ctx: DriverContext, tmp_path: Path) -> None:
    driver = make_driver(tmp_path, [])
    node = nodes()["compute1"]
    layout = ContainerLayout.for_lab(fake_ctx.state_dir, "compute1")
    layout.node_dir.mkdir(parents=True)
    layout.config.write_text("# stacklab-marker: stacklab:otherlab:node:compute1\nlxc.uts.name = compute1\n")
    observed = driver.observe(node, fake_ctx)
    assert observed is not None and not observed.owned
    with pytest.raises(PlanError, match="not owned"):
        driver.diff(node, observed, None)
    with pytest.raises(StackLabError, match="never removes"):
        driver.delete(node.id, {"spec": dict(node.spec), "outputs": {}}, fake_ctx)
    assert layout.config.exists()


def test_failed_cloud_init_removes_everything_but_logs(fake_ctx: DriverContext, tmp_path: Path) -> None:
    assert isinstance(fake_ctx.runner, FakeRunner)
    lxc = FakeLxc(fake_ctx.runner, cloud_init="status: error\ndetail: boom\n")
    driver = make_driver(tmp_path, [])
    node = nodes()["compute1"]
    layout = ContainerLayout.for_lab(fake_ctx.state_dir, "compute1")
    original_start = lxc.start

    def start_and_log(argv: tuple[str, ...]) -> CommandResult:
        layout.console_log.write_text("systemd booting\ncloud-init failed\n")
        return original_start(argv)

    fake_ctx.runner.rules[1].result = start_and_log
    with pytest.raises(StackLabError, match="cloud-init in container compute1 did not finish cleanly") as caught:
        driver.apply(driver.diff(node, None, None), fake_ctx)
    assert "cloud-init failed" in str(caught.value)  # the console tail is quoted
    assert lxc.state == "MISSING"
    assert not layout.node_dir.exists()
    assert (fake_ctx.state_dir / "logs/container-compute1.console.log").read_text().endswith("cloud-init failed\n")


def test_ssh_timeout_is_reported(fake_ctx: DriverContext, tmp_path: Path) -> None:
    from stacklab.exec.readiness import ReadinessTimeout

    assert isinstance(fake_ctx.runner, FakeRunner)
    FakeLxc(fake_ctx.runner)

    def no_ssh(host: str, key_file: Path, budget: float, **_: Any) -> float:
        raise ReadinessTimeout(f"SSH as root@{host}:22", budget, "ConnectionRefused", 3)

    driver = make_driver(tmp_path, [], ssh=no_ssh)
    with pytest.raises(StackLabError, match=r"timed out after 1s waiting for SSH as root@10.240.1.31:22; last: Conn"):
        driver.apply(driver.diff(nodes()["compute1"], None, None), fake_ctx)
    assert not ContainerLayout.for_lab(fake_ctx.state_dir, "compute1").node_dir.exists()


def test_refuses_vm_specs(fake_ctx: DriverContext, tmp_path: Path) -> None:
    node = nodes()["compute1"]
    vm = Resource("node", node.name, dict(node.spec, kind="vm"), node.deps)
    with pytest.raises(PlanError, match="kind 'vm'"):
        make_driver(tmp_path, []).apply(make_driver(tmp_path, []).diff(vm, None, None), fake_ctx)


def test_a_container_going_with_its_lab_is_killed_others_stop_cleanly(fake_ctx: DriverContext, tmp_path: Path) -> None:
    """`down` (the node among the run's vanishing nodes, its dependents already deleted): `lxc-stop -k` at once, no
    clean shutdown of a root destroyed next. Any other delete (a recreate, a node not going in this run) still
    asks for a clean stop first. Both destroy and clean up the same; each says how long its stop took."""
    import dataclasses

    assert isinstance(fake_ctx.runner, FakeRunner)
    lxc = FakeLxc(fake_ctx.runner)
    driver = make_driver(tmp_path, [])
    node = nodes()["compute1"]
    layout = ContainerLayout.for_lab(fake_ctx.state_dir, "compute1")
    progress: list[str] = []
    for vanishing, expected in ((frozenset({"compute1"}), "-k"), (frozenset({"compute2"}), "-t")):
        outputs = driver.apply(driver.diff(node, None, None), fake_ctx)
        assert lxc.state == "RUNNING"
        fake_ctx.runner.calls.clear()
        ctx = dataclasses.replace(fake_ctx, vanishing_nodes=vanishing, progress=progress.append)
        driver.delete(node.id, {"spec": dict(node.spec), "hash": node.hash, "outputs": dict(outputs)}, ctx)
        stops = [c for c in fake_ctx.runner.calls if c[0] == "lxc-stop"]
        assert [c[5] for c in stops] == [expected], stops
        assert lxc.state == "MISSING" and not layout.node_dir.exists()
    assert [m.split(" in ")[0] for m in progress] == [
        "container compute1: killed",
        "container compute1: destroyed",
        "container compute1: stopped",
        "container compute1: destroyed",
    ]


# ----------------------------------------------------------------------------------------------------
# Isolation: explicit per node (issue 11)


def test_isolation_is_explicit_per_node_and_unprivileged_is_refused(tmp_path: Path) -> None:
    """Every container node is a privileged, unconfined LXC container; the model names the choice (`privileged`,
    default computed, privileged the only mode implemented), the LXC config has no idmap and `plan` says it per
    node with the reason from its roles. `privileged: false` is refused with the field's position, exit 2."""
    from stacklab.cli import main
    from stacklab.drivers.nodes.lxc_config import isolation_of
    from tests.unit.test_cli import cli_runner

    lab = load_lab_text(
        LAB.replace("    devices: [kvm, tun, fuse]\n", "    devices: [kvm]\n    privileged: true\n"), "x"
    )
    assert lab.nodes["compute1"].privileged is True and lab.nodes["storage1"].privileged is None
    resources = nodes()
    config = render_lxc_config(
        lab="ctlab",
        spec=resources["storage1"].spec,
        layout=ContainerLayout(LXCPATH, "storage1"),
        rootfs=ROOTFS,
    )
    assert "lxc.idmap" not in config and "lxc.apparmor.profile = unconfined" in config
    assert isolation_of({"roles": ["storage", "client"]}) == (
        "privileged, unconfined LXC container (storage: LVM (device-mapper), loop-backed LUNs, Ceph OSDs and file "
        "handles for NFS need host devices; client: loop devices and the iSCSI/NFS/RBD clients the suites run)"
    )
    assert "image rootfs" in isolation_of({"roles": []})

    bad = tmp_path / "unpriv.yml"
    bad.write_text(LAB.replace("    devices: [kvm, tun, fuse]\n", "    devices: [kvm]\n    privileged: false\n"))
    result = cli_runner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2, result.stdout
    assert f"{bad}:19:" in result.stderr and "privileged" in result.stderr
    assert "unprivileged LXC nodes are not implemented" in result.stderr and "Traceback" not in result.stderr
