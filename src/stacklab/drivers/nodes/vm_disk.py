"""The base disk of VM nodes: an unpartitioned ext4 qcow2 made from an image's root filesystem, plus its kernel.

VMs boot the kernel and initramfs directly (no partition table, no bootloader), so the disk is the root
filesystem itself: `mkfs.ext4 -d rootfs` into a sparse raw file, two VM-only files written into it with
`debugfs` (the shared rootfs directory, also the containers' lower layer, is never modified), then
`qemu-img convert` to qcow2. Every node gets a qcow2 overlay backed by this file.

The result is cached beside the rootfs, keyed by the image hash: `<rootfs>/../vm-<hash>/` holds `base.qcow2`,
`vmlinuz`, `initrd.img` and `manifest.json`. It is built in a temporary directory and renamed into place, under
a file lock, so parallel node applies (threads or processes) build it once and never see half a disk.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stacklab.errors import StackLabError
from stacklab.exec.filelock import file_lock
from stacklab.exec.runner import CommandError, Runner

LOG = logging.getLogger(__name__)

MIB = 1024**2
GIB = 1024**3
# Root filesystem size: what the rootfs uses, plus slack for journal and metadata, rounded up; cloud-init's
# resizefs grows it to the overlay's size at first boot.
_MIN_FS_BYTES = 2 * GIB
_FS_SLACK = 1.3
_FS_EXTRA_BYTES = 512 * MIB
_FS_ROUND = 256 * MIB

FS_LABEL = "stacklab-root"
FSTAB = "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n"
# NoCloud first: a VM's seed is a virtio disk labelled cidata. `None` keeps boot going if the seed is missing.
CLOUD_CFG_NAME = "90-stacklab-vm.cfg"
CLOUD_CFG = "# written by stacklab for VM nodes\ndatasource_list: [ NoCloud, None ]\n"
KERNEL_HINT = "add linux-image-cloud-amd64 to the image recipe's packages (images/debian-12-base.yml) and rebuild it"

_BUILD_TIMEOUT = 900.0
_VERSION_RE = re.compile(r"(\d+)")


class MissingKernelError(StackLabError):
    """The rootfs has no /boot/vmlinuz-* with a matching initrd: VMs cannot boot it."""


@dataclass(frozen=True)
class BaseDisk:
    """A cached, ready base disk: VM overlays use `qcow2` as their backing file."""

    directory: Path
    qcow2: Path
    kernel: Path
    initrd: Path
    kernel_version: str
    virtual_size: int
    image_hash: str


def base_disk_dir(rootfs: Path, image_hash: str) -> Path:
    return rootfs.parent / f"vm-{image_hash}"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in _VERSION_RE.findall(version))


def find_kernel(rootfs: Path) -> tuple[str, Path, Path]:
    """(version, vmlinuz, initrd) of the newest kernel in rootfs/boot that has an initramfs."""
    boot = rootfs / "boot"
    found: list[tuple[str, Path, Path]] = []
    for kernel in boot.glob("vmlinuz-*") if boot.is_dir() else ():
        version = kernel.name.removeprefix("vmlinuz-")
        initrd = boot / f"initrd.img-{version}"
        if initrd.is_file():
            found.append((version, kernel, initrd))
    if not found:
        raise MissingKernelError(
            f"the image root filesystem {rootfs} has no kernel with an initramfs in /boot, so VMs cannot boot it",
            hint=KERNEL_HINT,
        )
    return max(found, key=lambda item: _version_key(item[0]))


def read_base_disk(rootfs: Path, image_hash: str) -> BaseDisk | None:
    """The cached base disk for this image hash, or None if it was never (completely) built."""
    directory = base_disk_dir(rootfs, image_hash)
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
        disk = BaseDisk(
            directory=directory,
            qcow2=directory / "base.qcow2",
            kernel=directory / "vmlinuz",
            initrd=directory / "initrd.img",
            kernel_version=str(data["kernel_version"]),
            virtual_size=int(data["virtual_size"]),
            image_hash=str(data["image_hash"]),
        )
    except (ValueError, KeyError) as exc:
        LOG.warning("ignoring unreadable base disk manifest %s: %s", manifest, exc)
        return None
    if disk.image_hash != image_hash or not all(p.is_file() for p in (disk.qcow2, disk.kernel, disk.initrd)):
        LOG.warning("ignoring incomplete base disk cache %s", directory)
        return None
    return disk


def filesystem_size(used_bytes: int) -> int:
    """Bytes for the ext4 image of a rootfs using `used_bytes`: slack added, rounded, at least 2 GiB."""
    wanted = int(used_bytes * _FS_SLACK) + _FS_EXTRA_BYTES
    rounded = -(-wanted // _FS_ROUND) * _FS_ROUND
    return max(_MIN_FS_BYTES, rounded)


def debugfs_script(staging: Path, rootfs: Path) -> str:
    """debugfs commands that put the VM-only files into the new filesystem (replacing existing ones)."""
    lines = ["rm /etc/fstab", f"write {staging / 'fstab'} /etc/fstab"]
    if (rootfs / "etc/cloud/cloud.cfg.d").is_dir():
        target = f"/etc/cloud/cloud.cfg.d/{CLOUD_CFG_NAME}"
        lines += [f"rm {target}", f"write {staging / CLOUD_CFG_NAME} {target}"]
    return "\n".join(lines) + "\n"


def ensure_base_disk(
    rootfs: Path,
    image_hash: str,
    runner: Runner,
    *,
    progress: Callable[[str], None] = lambda _msg: None,
) -> BaseDisk:
    """The base disk for this image, built once (about 5-20 s for a 0.5-1 GB rootfs) and then reused.

    On failure nothing is left but the lock file: the temporary build directory is removed.
    """
    cached = read_base_disk(rootfs, image_hash)
    if cached is not None:
        return cached
    if not rootfs.is_dir():
        raise StackLabError(f"image root filesystem {rootfs} does not exist", hint="rebuild the image")
    version, kernel, initrd = find_kernel(rootfs)
    with file_lock(rootfs.parent / f"vm-{image_hash}.lock"):
        cached = read_base_disk(rootfs, image_hash)
        if cached is not None:
            return cached
        progress(f"building VM base disk from {rootfs}")
        final = base_disk_dir(rootfs, image_hash)
        if final.exists():
            shutil.rmtree(final)  # incomplete leftover of an interrupted build (no valid manifest)
        tmp = Path(tempfile.mkdtemp(prefix=f".vm-{image_hash}.", dir=rootfs.parent))
        try:
            disk = _build(
                rootfs, image_hash, runner, version=version, kernel=kernel, initrd=initrd, tmp=tmp, final=final
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.rename(tmp, final)
        LOG.info("built VM base disk %s (%d MiB virtual, kernel %s)", final, disk.virtual_size // MIB, version)
        return disk


def _make_filesystem(runner: Runner, rootfs: Path, staging: Path, raw: Path, size: int) -> None:
    """The ext4 image of `rootfs` in `raw`, with the staged files written in by debugfs (read back) and fsck'd."""
    runner.run(
        ["mkfs.ext4", "-q", "-F", "-L", FS_LABEL, "-d", str(rootfs), str(raw), f"{size // 1024}k"],
        timeout=_BUILD_TIMEOUT,
    )
    script = staging / "debugfs.cmds"
    script.write_text(debugfs_script(staging, rootfs))
    runner.run(["debugfs", "-w", "-f", str(script), str(raw)], timeout=120)
    check = runner.run(["debugfs", "-R", "cat /etc/fstab", str(raw)], timeout=60)
    if FSTAB.strip() not in check.stdout:
        raise StackLabError(f"writing /etc/fstab into {raw} failed: debugfs reads back {check.stdout!r}")
    fsck = runner.run(["e2fsck", "-f", "-p", str(raw)], timeout=300, check=False)
    if fsck.returncode > 1:  # 1 = errors corrected, which is fine
        raise CommandError(fsck)


def _build(
    rootfs: Path,
    image_hash: str,
    runner: Runner,
    *,
    version: str,
    kernel: Path,
    initrd: Path,
    tmp: Path,
    final: Path,
) -> BaseDisk:
    tmp.chmod(0o755)
    du = runner.run(["du", "-s", "-x", "--block-size=1", str(rootfs)], timeout=300)
    used = int(du.stdout.split()[0])
    size = filesystem_size(used)

    staging = tmp / "staging"
    staging.mkdir()
    for name, text in (("fstab", FSTAB), (CLOUD_CFG_NAME, CLOUD_CFG)):
        path = staging / name
        path.write_text(text)
        path.chmod(0o644)

    raw = tmp / "base.raw"
    _make_filesystem(runner, rootfs, staging, raw, size)
    qcow2 = tmp / "base.qcow2"
    runner.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], timeout=_BUILD_TIMEOUT)
    raw.unlink()
    shutil.rmtree(staging)
    shutil.copyfile(kernel, tmp / "vmlinuz")
    shutil.copyfile(initrd, tmp / "initrd.img")
    for name in ("base.qcow2", "vmlinuz", "initrd.img"):
        (tmp / name).chmod(0o644)
    manifest = {
        "image_hash": image_hash,
        "rootfs": str(rootfs),
        "kernel_version": version,
        "virtual_size": size,
        "rootfs_used_bytes": used,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return BaseDisk(
        directory=final,
        qcow2=final / "base.qcow2",
        kernel=final / "vmlinuz",
        initrd=final / "initrd.img",
        kernel_version=version,
        virtual_size=size,
        image_hash=image_hash,
    )
