"""libvirt calls the VM driver makes beyond the typed XML: lookups that answer None, undefine with the flags the
driver's libvirt has, ownership of a pool, and what QEMU (as libvirt-qemu) must be able to reach."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import libvirt

from stacklab.drivers.nodes.libvirt_storage import StoragePoolConfig
from stacklab.drivers.nodes.vm_domain import (
    VmLayout,
)
from stacklab.errors import StackLabError

LOG = logging.getLogger(__name__)

UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)


UNDEFINE_FLAGS_BASIC = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA


def quiet_libvirt_errors() -> None:
    """libvirt prints every error to stderr by default; we raise them as exceptions and log at debug."""

    def handler(_ctx: object, err: Sequence[Any]) -> None:
        LOG.debug("libvirt: %s", err[2] if len(err) > 2 else err)

    libvirt.registerErrorHandler(handler, None)


def lookup_domain(conn: Any, name: str) -> Any | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def lookup_pool(conn: Any, name: str) -> Any | None:
    try:
        return conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return None
        raise


def undefine(dom: Any) -> None:
    """Undefine with managed-save, snapshot, checkpoint and NVRAM data; drivers without some flags get fewer."""
    for flags in (UNDEFINE_FLAGS, UNDEFINE_FLAGS_BASIC):
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code == libvirt.VIR_ERR_NO_DOMAIN:
                return
            if code not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            LOG.debug("undefine flags %#x refused (%s); retrying with fewer", flags, exc)
    dom.undefine()


def pool_is_ours(pool: Any, path: Path) -> bool:
    config = StoragePoolConfig.parse(pool.XMLDesc(0))
    return os.path.normpath(config.path) == os.path.normpath(str(path))


def volume_names(pool: Any) -> list[str]:
    if not pool.isActive():
        return []
    pool.refresh(0)
    names: list[str] = pool.listVolumes()
    return names


def grant_qemu_traversal(state_dir: Path, layout: VmLayout) -> None:
    """Let QEMU (an unprivileged user) reach the lab's VM files: add search permission for others (o+x, not
    o+r) to the lab state dir and the dirs between it and the pool. The engine keeps the lab dir 0700 and resets
    it on every run; files inside stay 0600, and a running QEMU keeps its open files, so this is done again
    right before every domain start."""
    for directory in (state_dir, layout.vm_dir, layout.pool_dir, layout.node_dir):
        if not directory.is_dir():
            continue
        mode = stat.S_IMODE(directory.stat().st_mode)
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
            LOG.debug("made %s searchable by QEMU (%o)", directory, mode | stat.S_IXOTH)


def check_reachable_by_qemu(paths: Sequence[Path]) -> None:
    """QEMU runs as an unprivileged user (libvirt's DAC driver chowns the files, not their directories):
    every directory above a disk, kernel or log must be searchable by others."""
    for path in paths:
        for parent in path.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                raise StackLabError(
                    f"{parent} is not searchable by other users, so QEMU (running as libvirt-qemu) cannot open {path}",
                    hint=f"chmod o+x {parent}, or put the lab state under a searchable path (STACKLAB_STATE)",
                )
