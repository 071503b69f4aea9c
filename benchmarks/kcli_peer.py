"""kcli, the peer tool, doing stacklab's VM work on this host: same image, same bridges, same readiness check.

Used by `vm_ssh_ready.py`. kcli (`pip install kcli`, module `kvirt`) cannot boot stacklab's own VM disk: it has
no direct kernel boot (it boots the first disk through SeaBIOS) and attaches its NoCloud seed as a SATA CD-ROM,
which Debian's cloud kernel cannot see (no AHCI). So both tools boot one shared image here:

- `generic_recipe()`: stacklab's `debian-12-base` recipe with `linux-image-amd64` (AHCI, sr_mod, isofs as
  modules) instead of the cloud kernel, built into stacklab's image cache like any recipe.
- stacklab boots it as always (direct kernel boot of an ext4 qcow2 made from the rootfs).
- `boot_disk()`: the same rootfs as a partitioned qcow2 (MBR, one ext4 partition, extlinux) for kcli.
- `KcliLab`: kcli's own config in a private HOME, a kcli storage pool holding that disk, and a kcli plan of N
  VMs on the bridges of a networks-only stacklab lab (so the bridges and their leak check are stacklab's).
  Readiness is stacklab's `wait_ready` (SSH answers with the key, then `cloud-init status --wait` is done).

Everything created here is removed by `KcliLab.close()` (plan, VMs, volumes, pool, HOME), and checked gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped, import-not-found, unused-ignore]
import yaml

from stacklab.drivers.nodes import libvirtd, vm_disk
from stacklab.drivers.nodes.image import ImageBuilder, cache_root, entry_for
from stacklab.drivers.nodes.recipe import resolve_recipe
from stacklab.drivers.nodes.vm_ready import ReadyTarget, wait_ready
from stacklab.exec.runner import LocalRunner, Runner

GENERIC = "debian-12-generic"
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")
PART_OFFSET = 1024**2  # the partition starts at 1 MiB (sector 2048), as partitioning tools align it
HOST_TOOLS = {"extlinux": "extlinux", "sfdisk": "fdisk", "mkfs.ext4": "e2fsprogs", "qemu-img": "qemu-utils"}
# Bump when boot_disk() changes what it writes: cached disks of older layouts are rebuilt.
BOOT_DISK_VERSION = 2
# The image carries no `locales` package: stacklab's seeds say `locale: C.UTF-8`; kcli's say nothing, and
# cloud-init's default (en_US.UTF-8) fails, so the image's own cloud-init config sets it.
SYSTEM_LOCALE = "locale: C.UTF-8\n"
KCLI = [str(Path(sys.executable).with_name("kcli"))]
READY_BUDGET = 600.0


def generic_recipe(images_src: Path, images_dir: Path) -> None:
    """Write `debian-12-generic.yml` into `images_dir`: the base recipe with the generic kernel."""
    data = yaml.safe_load((images_src / "debian-12-base.yml").read_text())
    data["packages"] = ["linux-image-amd64" if p == "linux-image-cloud-amd64" else p for p in data["packages"]]
    header = (
        "# debian-12-base with the generic kernel (AHCI for kcli's SATA seed); written by benchmarks/kcli_peer.py\n"
    )
    (images_dir / f"{GENERIC}.yml").write_text(header + yaml.safe_dump(data, sort_keys=False))


def build_generic(images_dir: Path, runner: Runner) -> tuple[Path, str]:
    """The generic image in stacklab's cache (built once) and stacklab's VM base disk for it: (rootfs, hash)."""
    recipe = resolve_recipe(images_dir, GENERIC)
    entry = ImageBuilder(runner=runner, cache=cache_root(), progress=print).ensure(recipe)
    image_hash = entry_for(recipe, cache_root()).directory.name.rsplit("-", 1)[1]
    vm_disk.ensure_base_disk(entry.rootfs, image_hash, runner, progress=print)
    return entry.rootfs, image_hash


def extlinux_conf(version: str) -> str:
    return (
        "DEFAULT linux\nPROMPT 0\nTIMEOUT 1\n"
        "LABEL linux\n"
        f"  LINUX /boot/vmlinuz-{version}\n"
        f"  INITRD /boot/initrd.img-{version}\n"
        f"  APPEND root=LABEL={vm_disk.FS_LABEL} rw console=ttyS0\n"
    )


def boot_disk(rootfs: Path, image_hash: str, directory: Path, runner: Runner) -> Path:
    """A partitioned, extlinux-bootable qcow2 of `rootfs`, built once per image hash into `directory`.

    The name contains "debian" so that kcli applies its Debian defaults (NIC names ens3, ens4... on `pc`).
    """
    target = directory / f"{GENERIC}-{image_hash}-boot{BOOT_DISK_VERSION}.qcow2"
    if target.is_file():
        return target
    for stale in directory.glob(f"{GENERIC}-*.qcow2"):  # other images or older layouts
        stale.unlink()
    missing = [pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None]
    if missing or not MBR_BIN.is_file():
        runner.run(["apt-get", "install", "-y", "-q", *missing, "syslinux-common"], timeout=600)
    version, _kernel, _initrd = vm_disk.find_kernel(rootfs)
    directory.mkdir(parents=True, exist_ok=True)
    work = directory / f".build-{image_hash}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    raw, mnt = work / "disk.raw", work / "mnt"
    mnt.mkdir()
    try:
        used = int(runner.run(["du", "-s", "-x", "--block-size=1", str(rootfs)], timeout=300).stdout.split()[0])
        fs_bytes = vm_disk.filesystem_size(used)
        with raw.open("wb") as handle:
            handle.truncate(PART_OFFSET + fs_bytes)
        runner.run(["sfdisk", "-q", str(raw)], input="label: dos\nstart=2048, type=83, bootable\n", timeout=60)
        # extlinux reads ext4 without the 64bit feature; -d copies the rootfs into the partition at its offset
        runner.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                vm_disk.FS_LABEL,
                "-O",
                "^64bit",
                "-E",
                f"offset={PART_OFFSET}",
                "-d",
                str(rootfs),
                str(raw),
                f"{fs_bytes // 1024}k",
            ],
            timeout=900,
        )
        runner.run(["mount", "-o", f"loop,offset={PART_OFFSET}", str(raw), str(mnt)], timeout=60)
        try:
            (mnt / "etc/fstab").write_text(f"LABEL={vm_disk.FS_LABEL} / ext4 defaults,errors=remount-ro 0 1\n")
            (mnt / "etc/cloud/cloud.cfg.d" / vm_disk.CLOUD_CFG_NAME).write_text(vm_disk.CLOUD_CFG + SYSTEM_LOCALE)
            (mnt / "boot/extlinux").mkdir(exist_ok=True)
            (mnt / "boot/extlinux/extlinux.conf").write_text(extlinux_conf(version))
            runner.run(["extlinux", "--install", str(mnt / "boot/extlinux")], timeout=60)
        finally:
            runner.run(["umount", str(mnt)], timeout=60)
        runner.run(["dd", f"if={MBR_BIN}", f"of={raw}", "bs=440", "count=1", "conv=notrunc"], timeout=60)
        partial = work / "disk.qcow2"
        runner.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(partial)], timeout=900)
        os.rename(partial, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


@dataclass(frozen=True)
class KcliVM:
    name: str
    mgmt_ip: str
    storage_ip: str


class KcliLab:
    """A kcli plan of VMs on existing bridges, in a private HOME and a kcli pool; `close()` removes all of it."""

    def __init__(self, token: str, workdir: Path, disk: Path, key_file: Path) -> None:
        self.token = token
        self.plan = f"kcli-{token}"
        self.pool = f"kcli-bench-{token}"
        self.home = workdir / "home"
        self.pool_dir = workdir / "pool"
        self.disk = disk
        self.key_file = key_file
        self.vms: list[KcliVM] = []
        self.networks: list[Any] = []
        self.home.mkdir(parents=True)
        self.pool_dir.mkdir(parents=True)
        for path in (workdir, self.pool_dir):  # QEMU (libvirt-qemu) must reach the disks
            path.chmod(0o755)
        os.link(disk, self.pool_dir / disk.name)  # same filesystem: no copy
        config = {"default": {"client": "local"}, "local": {"type": "kvm", "pool": self.pool}}
        (self.home / ".kcli").mkdir()
        (self.home / ".kcli/config.yml").write_text(yaml.safe_dump(config))
        self.env = {**os.environ, "HOME": str(self.home)}
        self.conn = libvirt.open(libvirtd.URI)
        self.kcli(["create", "pool", "-p", str(self.pool_dir), self.pool])

    def kcli(self, args: Sequence[str], timeout: float = 600) -> str:
        result = subprocess.run(
            [*KCLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"kcli {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result.stdout + result.stderr

    def plan_text(
        self, vms: Sequence[KcliVM], bridges: tuple[str, str], prefix: int, memory_mib: int, cpus: int
    ) -> str:
        pubkey = self.key_file.with_name(self.key_file.name + ".pub").read_text().strip()
        plan = {
            vm.name: {
                "image": self.disk.name,
                "pool": self.pool,
                "memory": memory_mib,
                "numcpus": cpus,
                "nets": [
                    {"name": bridges[0], "ip": vm.mgmt_ip, "netmask": prefix},
                    {"name": bridges[1], "ip": vm.storage_ip, "netmask": prefix},
                ],
                "keys": [pubkey],
                # kcli would `apt-get install qemu-guest-agent` at first boot to learn DHCP addresses; nodes have
                # no route out and the addresses are static, so (as any offline kcli user) it is turned off
                "guestagent": False,
            }
            for vm in vms
        }
        return yaml.safe_dump(plan, sort_keys=False)

    def up(
        self, vms: Sequence[KcliVM], bridges: tuple[str, str], *, prefix: int, memory_mib: int, cpus: int
    ) -> dict[str, float]:
        """`kcli create plan` then wait for every VM as stacklab does; seconds from the start to each VM ready."""
        self.vms = list(vms)
        networks = (self.bridge_network(bridges[0], "mgmt"), self.bridge_network(bridges[1], "storage"))
        plan_file = self.home / "plan.yml"
        plan_file.write_text(self.plan_text(vms, networks, prefix, memory_mib, cpus))
        start = time.monotonic()
        self.kcli(["create", "plan", "-f", str(plan_file), self.plan])
        created = time.monotonic() - start

        def ready(vm: KcliVM) -> float:
            target = ReadyTarget(
                node=vm.name,
                host=vm.mgmt_ip,
                user="root",
                port=22,
                key_file=str(self.key_file),
                console_log=Path("/dev/null"),
                is_alive=lambda: self.is_running(vm.name),
            )
            wait_ready(target, budget=READY_BUDGET, runner=LocalRunner())
            return time.monotonic() - start

        with ThreadPoolExecutor(max_workers=len(vms)) as pool:
            times = dict(zip((vm.name for vm in vms), pool.map(ready, vms), strict=True))
        return {"created": created, **times}

    def bridge_network(self, bridge: str, role: str) -> str:
        """A transient libvirt network on an existing host bridge (`<forward mode='bridge'/>`), for kcli's nets.

        kcli finds plain host bridges through libvirt's interface driver, whose udev backend lists nothing that
        appeared after libvirtd started when no udevd runs (as here); a bridge-mode network is the usual way.
        """
        name = f"kcli-{self.token}-{role}"
        xml = f"<network><name>{name}</name><forward mode='bridge'/><bridge name='{bridge}'/></network>"
        self.networks.append(self.conn.networkCreateXML(xml))
        return name

    def is_running(self, name: str) -> bool:
        try:
            return bool(self.conn.lookupByName(name).isActive())
        except libvirt.libvirtError:
            return False

    def close(self) -> list[str]:
        """Delete the plan (VMs and their disks), the pool and the HOME; what is still left, as messages."""
        problems = []
        for args in (["delete", "plan", "-y", self.plan], ["delete", "pool", "-y", "-f", self.pool]):
            try:
                self.kcli(args)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                problems.append(str(exc))
        for network in self.networks:
            try:
                network.destroy()  # transient: destroying removes it
            except libvirt.libvirtError as exc:
                problems.append(f"network {network.name()}: {exc}")
        defined = {d.name() for d in self.conn.listAllDomains(0)}
        problems += [f"kcli VM {vm.name} still defined" for vm in self.vms if vm.name in defined]
        if self.pool in {p.name() for p in self.conn.listAllStoragePools(0)}:
            problems.append(f"kcli pool {self.pool} still defined")
        self.conn.close()
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.pool_dir, ignore_errors=True)
        return problems
