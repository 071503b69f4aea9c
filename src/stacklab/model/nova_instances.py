"""nova's `instances_on: nfs` resolved from a Lab: which export every compute mounts at nova's instances_path, and the
checks that refuse what cannot work. Pure (model layer): expand, checks, node_kind and suite_checks import it.

OpenStack-Ansible's storage page names NFS beside iSCSI and RBD as what reaches the hypervisor over br-storage;
with the instance disks on one shared file system, live migration needs no block migration and an evacuated
instance restarts from the same disk (nova finds the storage shared by a test file in instances_path: nothing to
configure). Every compute mounts the same storage.nfs export at /var/lib/nova/instances with its own kernel NFS
client, so a compute is a VM node (a container shares the lab host's kernel). The disks are files (qcow2 over
nova's base-image cache, `_base`, which is shared too): `images_type: rbd` puts them in Ceph instead, so the two
are refused together.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from stacklab.model.cinder_backends import kernel_computes, named_export, nfs_exports
from stacklab.model.errors import Loc
from stacklab.model.lab import Lab, NfsExport

Problem = tuple[Loc, str, str | None]
INSTANCES_PATH = "/var/lib/nova/instances"
MOUNT_OPTIONS = "vers=4.2"  # as glance's store and cinder's shares: NFSv4.2, the kernel client's defaults otherwise
NOVA_NFS_REASON = (
    "nova's instances_path is a kernel NFS mount on each compute; a container shares the lab host's kernel "
    "(stacklab makes OpenStack's NFS mounts in a VM node's own kernel)"
)


def nova_on_nfs(lab: Lab) -> bool:
    os_ = lab.openstack
    return os_ is not None and "nova" in os_.services and os_.nova.instances_on == "nfs"


def nova_computes(lab: Lab) -> list[str]:
    assert lab.openstack is not None
    return list(lab.openstack.nova.computes or lab.nodes_with_role("compute"))


def instances_export(lab: Lab) -> NfsExport | None:
    """The storage.nfs export nova's instances_path lives on (the one named, else the first)."""
    return named_export(lab, lab.openstack.nova.instances_export) if lab.openstack else None


def nova_nfs_nodes(lab: Lab) -> dict[str, str]:
    """compute -> why it mounts an NFS export with its kernel client (nova's instances_path)."""
    if not nova_on_nfs(lab):
        return {}
    return {n: f"nova instances_on nfs: {NOVA_NFS_REASON}" for n in nova_computes(lab)}


def check_nova_nfs(lab: Lab) -> Iterator[Problem]:
    """`openstack.nova.instances_on: nfs` (with `instances_export`): the export exists and is nova's alone, the
    disks are files (not rbd), each compute is a node on br-storage that is not a container;
    `instances_export` means nothing without instances_on nfs."""
    os_ = lab.openstack
    if os_ is None or "nova" not in os_.services:
        return
    nova, loc = os_.nova, ("openstack", "nova")
    if nova.instances_on != "nfs":
        if nova.instances_export is not None:
            yield (
                (*loc, "instances_export"),
                "instances_export is used with instances_on: nfs only",
                ("set instances_on: nfs or drop it"),
            )
        return
    nfs = lab.storage.nfs
    export = instances_export(lab)
    if nfs is None or not nfs.exports:
        yield (
            (*loc, "instances_on"),
            "nova instances_on nfs needs storage.nfs with an export",
            ("add storage.nfs.exports, e.g. {name: instances, path: /srv/nfs/instances}"),
        )
    elif export is None:
        names = ", ".join(e.name for e in nfs.exports)
        yield (*loc, "instances_export"), f"unknown export {nova.instances_export!r}", f"storage.nfs exports: {names}"
    if export is not None:
        yield from _shared_export(lab, export)
    if nova.images_type == "rbd":
        yield (
            (*loc, "images_type"),
            "images_type rbd keeps the instance disks in Ceph, not in instances_path on NFS",
            "drop images_type: with instances_on nfs the disks are qcow2 files on the NFS mount",
        )
    for node, override in nova.overrides.items():
        if override.images_type == "rbd":
            yield (
                (*loc, "overrides", node, "images_type"),
                f"{node} would keep its disks in Ceph; instances_on nfs puts every compute's disks on the export",
                "drop its images_type",
            )
    yield from _vm_computes(lab)


def _shared_export(lab: Lab, export: NfsExport) -> Iterator[Problem]:
    """The export must be nova's alone: cinder's volume files in the same directory would mix with the instance
    directories and `_base` (glance's store on the same export is refused by glance_store.check_glance_nfs)."""
    assert lab.openstack is not None
    where: Loc = ("openstack", "nova", "instances_export" if lab.openstack.nova.instances_export else "instances_on")
    os_ = lab.openstack
    if "cinder" in os_.services and "nfs" in os_.cinder.backends and export.path in nfs_exports(lab):
        yield (
            where,
            f"export {export.name!r} holds cinder's nfs volumes as well",
            ("give nova's instances an export of their own and list cinder's in openstack.cinder.nfs.exports"),
        )


def _vm_computes(lab: Lab) -> Iterator[Problem]:
    """Each compute mounts the export with its own kernel over br-storage (cinder's kernel backends check the same
    of their computes: not reported twice)."""
    assert lab.openstack is not None
    listed = lab.openstack.nova.computes
    already = set(kernel_computes(lab))
    for node in nova_computes(lab):
        spec = lab.nodes.get(node)
        if spec is None or node in already:  # an unknown node is reported by the nova checks
            continue
        where: Loc = ("openstack", "nova", "computes", listed.index(node)) if node in listed else ("nodes", node)
        if spec.kind == "container":  # `auto` becomes a VM node for it (plan/node_kind.py)
            yield (
                ("nodes", node, "kind"),
                f"compute {node!r} is a container: {NOVA_NFS_REASON}",
                f"give {node} `kind: vm` (or `auto`)",
            )
        if "storage" not in spec.nics:
            yield (
                where,
                f"compute {node!r} has no NIC on the storage network",
                "it mounts nova's export over br-storage",
            )


def nova_instances_config(lab: Lab, addresses: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What nova's `config` in its resource spec adds for instances_on nfs: the share (the NFS server's br-storage
    address and the export path), the server node (where the suites read the disks back) and the mount options.
    Empty otherwise, so recorded labs plan no change."""
    export = instances_export(lab)
    if not nova_on_nfs(lab) or export is None or lab.storage.nfs is None:
        return {}
    node = lab.storage.nfs.node
    return {
        "instances_share": f"{addresses[node]['storage']}:{export.path}",
        "instances_server": node,
        "instances_mount_options": MOUNT_OPTIONS,
    }
