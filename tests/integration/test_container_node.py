"""Two LXC container nodes on two real bridges, started in parallel by the container driver.

Needs root, LXC (`lxc-start`) and an image rootfs with systemd, cloud-init and openssh-server: the one built by
the image driver (newest `debian-12-base-*` in the image cache, built there first on a fresh host) or one named
by STACKLAB_TEST_ROOTFS. The bridges
are made in the host netns with random names (`tt<hex>m`, `tt<hex>s`) and random /24s, and removed in the
finalizer even when the test fails; so are the containers.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.nodes.container import ContainerDriver
from stacklab.drivers.nodes.image import ImageBuilder
from stacklab.drivers.nodes.lxc_config import ContainerLayout, cgroup_base
from stacklab.drivers.nodes.lxc_host import cgroup_mounts
from stacklab.drivers.nodes.recipe import resolve_recipe
from stacklab.errors import StackLabError
from stacklab.exec.readiness import ReadinessTimeout
from stacklab.exec.runner import LocalRunner
from stacklab.exec.ssh import SSHRunner
from stacklab.model.lab import Lab
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Resource

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow]

IMAGE_CACHE = Path(os.environ.get("STACKLAB_IMAGE_CACHE", "/var/cache/stacklab/images"))


def _rootfs() -> Path | None:
    pinned = os.environ.get("STACKLAB_TEST_ROOTFS")
    if pinned:
        return Path(pinned)
    candidates = sorted(IMAGE_CACHE.glob("debian-12-base-*/rootfs"), key=lambda p: p.stat().st_mtime)
    if candidates:
        return candidates[-1]
    if os.geteuid() != 0 or shutil.which("mmdebstrap") is None:
        return None
    # A fresh host: build the shipped base recipe into the cache, as `stacklab up` would (~45 s, then cached).
    recipe = resolve_recipe(Path(__file__).resolve().parents[2] / "images", "debian-12-base")
    return ImageBuilder(LocalRunner(), IMAGE_CACHE).ensure(recipe).rootfs


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (uid 0) for LXC containers and bridges"
    for tool in ("lxc-start", "lxc-attach", "lxc-destroy", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install lxc openssh-client)"
    rootfs = _rootfs()
    if rootfs is None or not (rootfs / "usr/bin/cloud-init").exists() or not (rootfs / "usr/sbin/sshd").exists():
        return (
            f"no image rootfs with cloud-init and sshd (build debian-12-base into {IMAGE_CACHE} "
            "or set STACKLAB_TEST_ROOTFS)"
        )
    return None


@dataclass
class Net:
    name: str
    bridge: str
    cidr: ipaddress.IPv4Network


def _free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        used = [
            ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}").network
            for a in ipr.get_addr(family=2)
        ]
    picked: list[ipaddress.IPv4Network] = []
    while len(picked) < count:
        net = ipaddress.IPv4Network(f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.0/24")
        if not any(net.overlaps(u) for u in used + picked):
            picked.append(net)
    return picked


@pytest.fixture
def bridges() -> Iterator[list[Net]]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from pyroute2 import IPRoute

    tag = secrets.token_hex(2)[:3]
    nets = [
        Net(name, f"tt{tag}{name[0]}", cidr) for name, cidr in zip(("mgmt", "storage"), _free_subnets(2), strict=True)
    ]
    ipr = IPRoute()
    try:
        for net in nets:
            ipr.link("add", ifname=net.bridge, kind="bridge")
            index = ipr.link_lookup(ifname=net.bridge)[0]
            ipr.addr("add", index=index, address=str(next(net.cidr.hosts())), prefixlen=net.cidr.prefixlen)
            ipr.link("set", index=index, state="up")
        yield nets
    finally:
        for net in nets:
            for index in ipr.link_lookup(ifname=net.bridge):
                ipr.link("del", index=index)
        ipr.close()


def _lab(nets: list[Net]) -> Lab:
    mgmt, storage = nets
    text = f"""
name: ct{secrets.token_hex(2)}
prefix: t{secrets.token_hex(2)[:3]}
networks:
  mgmt: {{bridge: {mgmt.bridge}, cidr: {mgmt.cidr}, pin_name: true}}
  storage: {{bridge: {storage.bridge}, cidr: {storage.cidr}, pin_name: true}}
images:
  base: {{recipe: debian-12-base}}
nodes:
  node1:
    kind: container
    image: base
    memory: 512MiB
    nics: [mgmt, storage]
    devices: [tun, fuse]
  node2:
    kind: container
    image: base
    memory: 512MiB
    nics: [mgmt, storage]
"""
    return load_lab_text(text, "ct.yml")


@pytest.fixture
def lab_ctx(bridges: list[Net], tmp_path: Path) -> Iterator[tuple[DriverContext, list[Resource]]]:
    lab = _lab(bridges)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60)
    rootfs = _rootfs()
    assert rootfs is not None
    outputs: dict[str, dict[str, Any]] = {
        "image/base": {"rootfs": str(rootfs), "hash": "test", "manifest": ""},
        f"sshkey/{lab.name}": {"private_key": str(key), "public_key": key.with_suffix(".pub").read_text().strip()},
    }
    state = tmp_path / "state"
    state.mkdir()
    ctx = DriverContext(lab=lab, runner=LocalRunner(), state_dir=state, outputs=outputs)
    nodes = [r for r in expand(lab) if r.kind == "node"]
    driver = ContainerDriver()
    try:
        yield ctx, nodes
    finally:
        for node in nodes:  # whatever the test did: nothing may stay behind
            try:
                driver.delete(node.id, {"spec": dict(node.spec), "outputs": {}}, ctx)
            except Exception as exc:  # keep cleaning the others
                print(f"cleanup of {node.id} failed: {exc}")


def _ssh(ctx: DriverContext, outputs: Any) -> SSHRunner:
    ssh = outputs["ssh"]
    return SSHRunner(
        ssh["host"],
        user=ssh["user"],
        key_file=Path(ssh["key"]),
        port=ssh["port"],
        known_hosts=ctx.state_dir / "known_hosts",
    )


def test_two_containers_on_two_bridges(lab_ctx: tuple[DriverContext, list[Resource]], bridges: list[Net]) -> None:
    ctx, nodes = lab_ctx
    driver = ContainerDriver()
    assert all(driver.observe(n, ctx) is None for n in nodes)

    def up(node: Resource) -> Any:
        change = driver.diff(node, driver.observe(node, ctx), None)
        assert change.action is Action.CREATE
        return driver.apply(change, ctx)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(up, nodes))
    outputs = {n.name: out for n, out in zip(nodes, results, strict=True)}
    for name, out in outputs.items():
        print(f"{name}: ready {out['ready_seconds']}s after lxc-start")
        assert out["kind"] == "container"
        assert out["name"] == name
        assert out["ready_seconds"] > 0

    for node in nodes:
        out = outputs[node.name]
        other = outputs["node2" if node.name == "node1" else "node1"]
        with _ssh(ctx, out) as ssh:
            assert ssh.run(["hostname"], timeout=30).stdout.strip() == node.name
            for index, nic in enumerate(node.spec["nics"]):
                shown = ssh.run(["ip", "-4", "-o", "addr", "show", "dev", f"eth{index}"], timeout=30).stdout
                assert nic["address"] in shown, shown
                assert ssh.run(["cat", f"/sys/class/net/eth{index}/address"], timeout=30).stdout.strip() == nic["mac"]
            for net, address in other["addresses"].items():
                ping = ssh.run(["ping", "-c", "1", "-W", "2", address], timeout=30, check=False)
                assert ping.ok, (
                    f"{node.name} cannot ping {other['name']} on {net} ({address}): {ping.stdout}{ping.stderr}"
                )
            assert ssh.run(["systemctl", "is-system-running"], timeout=30, check=False).stdout.strip() in (
                "running",
                "degraded",
            )
        for nic in node.spec["nics"]:
            assert Path("/sys/class/net", nic["host_ifname"]).exists()
    node1 = outputs["node1"]
    with _ssh(ctx, node1) as ssh:
        assert ssh.run(["test", "-c", "/dev/net/tun"], timeout=30, check=False).ok
        limit = ssh.run(["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"], timeout=30, check=False).stdout.strip()
        if Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists():  # v1 memory controller on this host
            assert int(limit) == 512 * 1024 * 1024
        state = ssh.run(["systemctl", "is-system-running"], timeout=30, check=False).stdout.strip()
        failed = ssh.run(["systemctl", "--failed", "--no-legend"], timeout=30, check=False).stdout.strip()
        print(f"node1: systemd {state}; failed units: {failed or 'none'}")

    # A stopped node is drift; apply starts the same container again (same host keys: known_hosts still fits).
    node2 = nodes[1]
    layout2 = ContainerLayout.for_lab(ctx.state_dir, node2.name)
    ctx.runner.run(["lxc-stop", "-P", str(layout2.lxcpath), "-n", node2.name, "-t", "30"], timeout=60)
    recorded2 = {"spec": dict(node2.spec), "hash": node2.hash, "outputs": outputs[node2.name]}
    change = driver.diff(node2, driver.observe(node2, ctx), recorded2)
    assert change.action is Action.UPDATE and change.reasons == ("drift: stopped",)
    outputs[node2.name] = driver.apply(change, ctx)
    print(f"node2: ready {outputs[node2.name]['ready_seconds']}s after restart")
    with _ssh(ctx, outputs[node2.name]) as ssh:
        assert ssh.run(["hostname"], timeout=30).stdout.strip() == node2.name

    # A second pass plans nothing.
    for node in nodes:
        observed = driver.observe(node, ctx)
        assert observed is not None and observed.owned and observed.facts["state"] == "running"
        recorded = {"spec": dict(node.spec), "hash": node.hash, "outputs": outputs[node.name]}
        assert driver.diff(node, observed, recorded).action is Action.NOOP

    # delete removes containers, veths, node dirs and the per-node cgroup trees
    for node in nodes:
        recorded = {"spec": dict(node.spec), "hash": node.hash, "outputs": outputs[node.name]}
        driver.delete(node.id, recorded, ctx)
        driver.delete(node.id, recorded, ctx)  # already gone: still fine
        layout = ContainerLayout.for_lab(ctx.state_dir, node.name)
        assert not layout.node_dir.exists()
        for nic in node.spec["nics"]:
            assert not Path("/sys/class/net", nic["host_ifname"]).exists()
        base = cgroup_base(ctx.lab.name, layout.lxcpath, node.name)
        assert not [m / base for m in cgroup_mounts() if (m / base).exists()]
        assert driver.observe(node, ctx) is None
    assert not (ctx.state_dir / "lxc").exists()


def test_failed_readiness_removes_the_container(lab_ctx: tuple[DriverContext, list[Resource]]) -> None:
    ctx, nodes = lab_ctx
    node = nodes[0]

    def no_ssh(host: str, key_file: Path, budget: float, **_: Any) -> float:
        raise ReadinessTimeout(f"SSH as root@{host}:22", budget, "injected failure", 1)

    driver = ContainerDriver(ssh_waiter=no_ssh)
    change = driver.diff(node, driver.observe(node, ctx), None)
    with pytest.raises(StackLabError, match="injected failure") as caught:
        driver.apply(change, ctx)
    assert "last lines of" in str(caught.value)
    layout = ContainerLayout.for_lab(ctx.state_dir, node.name)
    assert not layout.node_dir.exists()
    assert driver.observe(node, ctx) is None
    for nic in node.spec["nics"]:
        assert not Path("/sys/class/net", nic["host_ifname"]).exists()
    base = cgroup_base(ctx.lab.name, layout.lxcpath, node.name)
    assert not [m / base for m in cgroup_mounts() if (m / base).exists()]
    assert (ctx.state_dir / "logs" / f"container-{node.name}.console.log").is_file()
