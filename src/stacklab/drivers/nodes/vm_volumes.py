"""The lab's libvirt storage pool and a VM node's volumes in it: the pool defined once per lab (never a foreign
one), the root overlay on the base disk and the data disks, whether they are all there, and their removal."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from stacklab.drivers.nodes.libvirt_storage import StoragePoolConfig, StorageVolumeConfig
from stacklab.drivers.nodes.vm_disk import BaseDisk
from stacklab.drivers.nodes.vm_domain import MIB, ROOT_DISK_BYTES, VmLayout, pool_name
from stacklab.drivers.nodes.vm_libvirt import lookup_pool, pool_is_ours, volume_names
from stacklab.errors import PlanError

LOG = logging.getLogger(__name__)

# libvirt refuses a pool refresh while a volume is being created in it ("asynchronous jobs running"):
# every pool operation of this process goes through one lock (they take milliseconds).
POOL_LOCK = threading.RLock()


def ensure_pool(conn: Any, lab: str, layout: VmLayout) -> Any:
    name = pool_name(lab)
    pool = lookup_pool(conn, name)
    if pool is not None and not pool_is_ours(pool, layout.pool_dir):
        raise PlanError(
            f"libvirt storage pool {name} exists with another path than {layout.pool_dir}",
            hint="stacklab never touches foreign pools; remove or rename it",
        )
    if pool is None:
        layout.pool_dir.mkdir(parents=True, exist_ok=True)
        layout.pool_dir.chmod(0o755)
        pool = conn.storagePoolDefineXML(StoragePoolConfig(name=name, path=str(layout.pool_dir)).to_xml(), 0)
        LOG.info("defined storage pool %s at %s", name, layout.pool_dir)
    if not pool.isActive():
        pool.create(0)
    return pool


def create_volumes(pool: Any, layout: VmLayout, spec: Mapping[str, Any], base: BaseDisk) -> None:
    root = StorageVolumeConfig(
        name=layout.root_volume,
        capacity_bytes=max(base.virtual_size, ROOT_DISK_BYTES),
        backing_path=str(base.qcow2),
    )
    pool.createXML(root.to_xml(), 0)
    for disk in spec.get("disks", []):
        data = StorageVolumeConfig(
            name=layout.data_volume(str(disk["name"])), capacity_bytes=int(disk["size_mib"]) * MIB
        )
        pool.createXML(data.to_xml(), 0)


def volumes_present(conn: Any, lab: str, layout: VmLayout, spec: Mapping[str, Any]) -> bool:
    with POOL_LOCK:
        pool = lookup_pool(conn, pool_name(lab))
        if pool is None or not pool.isActive():
            return False
        listed = set(volume_names(pool))
    wanted = {
        layout.root_volume,
        layout.seed_volume,
        *(layout.data_volume(str(d["name"])) for d in spec.get("disks", [])),
    }
    # libvirt lists what its last refresh saw; the file check covers a seed written since
    present = listed | {v for v in wanted if layout.path(v).exists()}
    return wanted <= present


def remove_volumes(conn: Any, lab: str, layout: VmLayout) -> None:
    """Delete the node's volumes (in a pool of ours only), files libvirt does not list, and the pool and its
    directory once empty."""
    with POOL_LOCK:
        pool = lookup_pool(conn, pool_name(lab))
        if pool is not None and pool_is_ours(pool, layout.pool_dir):
            for volume in volume_names(pool):
                if volume.startswith(layout.volume_prefix):
                    pool.storageVolLookupByName(volume).delete(0)
                    LOG.debug("deleted volume %s", volume)
        elif pool is not None:
            LOG.warning("pool %s has another path than %s; not touching its volumes", pool.name(), layout.pool_dir)
            pool = None
        # Files libvirt does not list (a seed written before a failed refresh, a foreign pool state).
        if layout.pool_dir.is_dir():
            for leftover in layout.pool_dir.glob(f"{layout.volume_prefix}*"):
                leftover.unlink(missing_ok=True)
        if pool is not None and not volume_names(pool):
            if pool.isActive():
                pool.destroy()
            pool.undefine()
            LOG.info("storage pool %s removed (no volumes left)", pool_name(lab))
        if layout.pool_dir.is_dir() and not any(layout.pool_dir.iterdir()):
            layout.pool_dir.rmdir()
