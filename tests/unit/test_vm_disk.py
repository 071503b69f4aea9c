"""Base disk policy: which kernel, how big, what goes into the filesystem, and when the cache is trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stacklab.drivers.nodes.vm_disk import (
    CLOUD_CFG_NAME,
    GIB,
    MIB,
    MissingKernelError,
    base_disk_dir,
    debugfs_script,
    ensure_base_disk,
    filesystem_size,
    find_kernel,
    read_base_disk,
)
from stacklab.exec.fake import FakeRunner


def make_rootfs(root: Path, versions: list[str], *, initrd: bool = True) -> Path:
    rootfs = root / "rootfs"
    (rootfs / "boot").mkdir(parents=True)
    (rootfs / "etc/cloud/cloud.cfg.d").mkdir(parents=True)
    for version in versions:
        (rootfs / f"boot/vmlinuz-{version}").write_bytes(b"k")
        if initrd:
            (rootfs / f"boot/initrd.img-{version}").write_bytes(b"i")
    return rootfs


def test_newest_kernel_with_an_initramfs_wins(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path, ["6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64"])
    (rootfs / "boot/vmlinuz-6.1.0-99-cloud-amd64").write_bytes(b"no initrd for this one")
    version, kernel, initrd = find_kernel(rootfs)
    assert version == "6.1.0-56-cloud-amd64"
    assert kernel.name == "vmlinuz-6.1.0-56-cloud-amd64" and initrd.name == "initrd.img-6.1.0-56-cloud-amd64"


def test_rootfs_without_kernel_names_the_package_to_add(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path, [])
    with pytest.raises(MissingKernelError) as info:
        find_kernel(rootfs)
    assert "linux-image-cloud-amd64" in str(info.value)
    # checked before anything is built or locked
    with pytest.raises(MissingKernelError):
        ensure_base_disk(rootfs, "h1", FakeRunner())


@pytest.mark.parametrize(
    ("used", "expected"),
    [(0, 2 * GIB), (500 * MIB, 2 * GIB), (2 * GIB, 3328 * MIB), (3 * GIB, 4 * GIB + 512 * MIB)],
)
def test_filesystem_size_has_slack_and_a_floor(used: int, expected: int) -> None:
    size = filesystem_size(used)
    assert size == expected and size % (256 * MIB) == 0 and size >= used


def test_debugfs_script_replaces_vm_only_files(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path, ["6.1"])
    script = debugfs_script(tmp_path / "staging", rootfs).splitlines()
    assert script == [
        "rm /etc/fstab",
        f"write {tmp_path}/staging/fstab /etc/fstab",
        f"rm /etc/cloud/cloud.cfg.d/{CLOUD_CFG_NAME}",
        f"write {tmp_path}/staging/{CLOUD_CFG_NAME} /etc/cloud/cloud.cfg.d/{CLOUD_CFG_NAME}",
    ]


def test_cache_is_used_only_when_complete_and_for_the_same_hash(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path, ["6.1"])
    directory = base_disk_dir(rootfs, "h1")
    assert directory == tmp_path / "vm-h1"
    directory.mkdir()
    for name in ("base.qcow2", "vmlinuz", "initrd.img"):
        (directory / name).write_bytes(b"x")
    assert read_base_disk(rootfs, "h1") is None  # no manifest: an interrupted build
    manifest = {"image_hash": "h1", "kernel_version": "6.1", "virtual_size": 2 * GIB}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    disk = read_base_disk(rootfs, "h1")
    assert disk is not None and disk.qcow2 == directory / "base.qcow2" and disk.virtual_size == 2 * GIB
    # a cached disk is returned without running anything (FakeRunner fails on any command)
    assert ensure_base_disk(rootfs, "h1", FakeRunner()) == disk
    (directory / "initrd.img").unlink()
    assert read_base_disk(rootfs, "h1") is None
