"""One real VM under libvirt + QEMU (TCG here): boot, SSH with the lab key, delete, and prove nothing remains.

Two throwaway bridges with unique names carry the VM's NICs (host side has the gateway address, so SSH goes
host -> bridge -> guest). The rootfs is the image helper's Debian 12 image when one with a kernel is cached under
/var/cache/stacklab/images, else one built here with mmdebstrap into /var/tmp (about a minute, then reused).
Everything is removed in finalizers, also when the test fails; the libvirtd the driver started (if any) is
stopped by the driver's delete once no lab uses it. The seed is the driver's own vm.write_seed (seed.py's real NoCloud
rendering and ISO), and the guest is checked against what it rendered.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacklab.drivers.base import DriverContext
from stacklab.drivers.nodes import libvirtd
from stacklab.drivers.nodes.vm import VmDriver, write_seed
from stacklab.drivers.nodes.vm_domain import VmLayout, domain_name, pool_name
from stacklab.drivers.nodes.vm_ready import ReadyTarget, ssh_argv
from stacklab.exec.runner import LocalRunner
from stacklab.model.load import load_lab_text
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Change, Resource

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1200)]

TOOLS = (
    "qemu-system-x86_64",
    "libvirtd",
    "virtlogd",
    "virsh",
    "qemu-img",
    "mkfs.ext4",
    "debugfs",
    "ssh",
    "ssh-keygen",
    "genisoimage",
)
IMAGE_CACHE = Path("/var/cache/stacklab/images")
WORK = Path("/var/tmp/stacklab-vmtest")  # searchable by libvirt-qemu (pytest's tmp_path is not)
FALLBACK_ROOTFS = WORK / "rootfs"
PACKAGES = (
    "systemd-sysv,dbus,udev,openssh-server,cloud-init,ifupdown,iproute2,iputils-ping,python3,sudo,procps,"
    "linux-image-cloud-amd64"
)
SUITE_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)

LAB = """
name: {name}
prefix: {prefix}
networks:
  mgmt: {{bridge: m, cidr: 10.{octet}.1.0/24}}
  storage: {{bridge: s, cidr: 10.{octet}.2.0/24, mtu: 9000}}
images:
  base: {{recipe: debian-12-base}}
nodes:
  vm1:
    kind: vm
    image: base
    cpus: 2
    memory: 1GiB
    nics: [mgmt, storage]
    disks: [{{name: data, size: 256MiB}}]
"""


def _missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@pytest.fixture(scope="module")
def rootfs() -> tuple[Path, str]:
    """(rootfs, hash) of a Debian 12 image with a kernel: the image helper's if cached, else built here."""
    missing = _missing_tools()
    if missing:
        pytest.skip(
            f"missing {', '.join(missing)}: apt-get install --no-install-recommends libvirt-daemon-system "
            "qemu-system-x86 qemu-utils openssh-client e2fsprogs genisoimage"
        )
    for candidate in sorted(IMAGE_CACHE.glob("**/rootfs/boot/vmlinuz-*")):
        root = candidate.parent.parent
        if list((root / "boot").glob("initrd.img-*")):
            return root, f"cached-{int(root.stat().st_mtime)}"
    if not (FALLBACK_ROOTFS / "boot").is_dir() or not list((FALLBACK_ROOTFS / "boot").glob("vmlinuz-*")):
        if shutil.which("mmdebstrap") is None:
            pytest.skip("no cached image with a kernel and no mmdebstrap to build one")
        WORK.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(FALLBACK_ROOTFS, ignore_errors=True)
        LocalRunner().run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={PACKAGES}",
                '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
                "bookworm",
                str(FALLBACK_ROOTFS),
                *SUITE_SOURCES,
            ],
            timeout=1200,
        )
    return FALLBACK_ROOTFS, f"vmtest-{int((FALLBACK_ROOTFS / 'etc/os-release').stat().st_mtime)}"


class RecordingSeed:
    """The driver's own seed step (vm.write_seed), keeping what it rendered so the test can compare the guest
    with it."""

    def __init__(self) -> None:
        self.rendered: dict[str, dict[str, str]] = {}

    def __call__(self, *, node_name: str, **kwargs: Any) -> Mapping[str, str]:
        files = write_seed(node_name=node_name, **kwargs)
        self.rendered[node_name] = dict(files)
        return files


@pytest.fixture
def lab_ctx(rootfs: tuple[Path, str]) -> Iterator[tuple[DriverContext, Resource]]:
    token = secrets.token_hex(2)
    octet = 200 + secrets.randbelow(50)
    lab = load_lab_text(LAB.format(name=f"vmit{token}", prefix=f"v{token[:3]}", octet=octet), "vmit.yml")
    resource = next(r for r in expand(lab, {"node_kind": "vm", "accel": "tcg"}) if r.kind == "node")
    runner = LocalRunner()
    state_dir = WORK / "state" / lab.name
    state_dir.mkdir(parents=True)
    for parent in (WORK, WORK / "state"):
        parent.chmod(0o755)
    key = state_dir / "id_ed25519"
    runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", lab.name, "-f", str(key)], timeout=30)
    ctx = DriverContext(
        lab=lab,
        runner=runner,
        state_dir=state_dir,
        outputs={
            "image/base": {"rootfs": str(rootfs[0]), "hash": rootfs[1]},
            f"sshkey/{lab.name}": {"private_key": str(key), "public_key": str(key) + ".pub"},
        },
    )
    bridges = []
    try:
        for name, net in lab.networks.items():
            ifname = lab.bridge_ifname(name)
            runner.run(["ip", "link", "add", "name", ifname, "type", "bridge"], timeout=30)
            bridges.append(ifname)
            runner.run(["ip", "link", "set", ifname, "mtu", str(net.mtu), "up"], timeout=30)
            runner.run(["ip", "addr", "add", f"{net.gateway_address}/{net.cidr.prefixlen}", "dev", ifname], timeout=30)
        yield ctx, resource
    finally:
        try:
            VmDriver().delete(resource.id, {"outputs": {}}, ctx)
        finally:
            for ifname in bridges:
                runner.run(["ip", "link", "del", ifname], timeout=30, check=False)
            shutil.rmtree(state_dir, ignore_errors=True)


def test_vm_boots_answers_ssh_and_leaves_nothing(
    lab_ctx: tuple[DriverContext, Resource], monkeypatch: pytest.MonkeyPatch
) -> None:
    import libvirt

    ctx, resource = lab_ctx
    # The rootfs is any cached image with a kernel, not a build of the lab's recipe: the driver must not compare
    # the hash it boots with the recipe's.
    monkeypatch.setattr("stacklab.drivers.nodes.vm.current_entry", lambda _ctx, _image: None)
    seed = RecordingSeed()
    driver = VmDriver(seed_writer=seed)
    spec = resource.spec
    taps = [nic["host_ifname"] for nic in spec["nics"]]

    outputs = driver.apply(Change(resource, Action.CREATE), ctx)
    assert outputs["kind"] == "vm" and outputs["accel"] == "tcg"
    assert outputs["addresses"] == {n["network"]: n["address"].split("/")[0] for n in spec["nics"]}
    assert 0 < outputs["ready_seconds"] < 480

    # the lab key logs in, cloud-init finished, and the guest has the spec's addresses, MTU and data disk
    ssh = outputs["ssh"]
    target = ReadyTarget(resource.name, ssh["host"], ssh["user"], ssh["port"], ssh["key"], Path(), lambda: True)
    probe = ctx.runner.run(
        ssh_argv(
            target,
            [
                "sh",
                "-c",
                "cloud-init status; ip -o addr; cat /sys/class/net/eth1/mtu; lsblk -dn -o NAME; "
                "echo instance=$(cat /var/lib/cloud/data/instance-id) host=$(hostname)",
            ],
        ),
        timeout=60,
    )
    assert "status: done" in probe.stdout
    # the guest ran seed.py's rendering: its instance-id and hostname are the rendered ones
    meta = yaml.safe_load(seed.rendered[resource.name]["meta-data"])
    assert f"instance={meta['instance-id']} host={resource.name}" in probe.stdout
    for address in outputs["addresses"].values():
        assert f"inet {address}/24" in probe.stdout
    assert "\n9000\n" in probe.stdout and "vdb" in probe.stdout
    # the taps carry the spec's names, on the spec's bridges, and the console is logged
    for nic in spec["nics"]:
        link = ctx.runner.run(["ip", "-j", "link", "show", nic["host_ifname"]], timeout=30)
        assert json.loads(link.stdout)[0]["master"] == nic["bridge"]
    assert Path(outputs["console_log"]).stat().st_size > 0

    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.owned and observed.drift == ()

    driver.delete(resource.id, {"outputs": outputs, "spec": dict(spec)}, ctx)

    # the driver may have stopped the libvirtd it started (no lab uses it any more); else ask it
    conn = libvirt.open(libvirtd.URI) if libvirtd.libvirtd_answers(ctx.runner) else None
    if conn is not None:
        try:
            assert domain_name(ctx.lab.name, resource.name) not in [d.name() for d in conn.listAllDomains(0)]
            assert pool_name(ctx.lab.name) not in [p.name() for p in conn.listAllStoragePools(0)]
        finally:
            conn.close()
    layout = VmLayout(ctx.state_dir, resource.name)
    assert not layout.pool_dir.exists() and not layout.node_dir.exists()
    for tap in taps:
        assert not ctx.runner.run(["ip", "link", "show", tap], timeout=30, check=False).ok
