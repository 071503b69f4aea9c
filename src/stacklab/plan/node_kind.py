"""Which kind a node becomes (`vm` or `container`) and why: the lab's own `kind`, or for `kind: auto` the host's
answer. Pure: the host's choices (doctor's implementation per role) come in as a mapping.

A container shares the lab host's kernel; a VM node boots its own (Debian's cloud kernel: device-mapper, LIO,
nfsd, open-iscsi, krbd). So `auto` is not only "VM where KVM runs guests": a node that holds something only a
kernel can serve becomes a VM node when this host's kernel cannot serve it (the CI host type has no
device-mapper, configfs/LIO or nfsd), and a node where cinder-volume serves a kernel backend (lvm, nfs) is a VM
node on every host, because OpenStack-Ansible's storage page wants that cinder-volume "directly on a physical
host (not into a container)". `plan` prints the reason per node; a node the lab pins keeps its kind.
"""

from __future__ import annotations

from collections.abc import Mapping

from stacklab.model.cinder_backends import (
    CONTAINER_REASON,
    NFS_REASON,
    compute_reason,
    kernel_backends,
    kernel_computes,
)
from stacklab.model.glance_store import nfs_mounting_nodes
from stacklab.model.lab import Lab

# A pinned kernel implementation on a node -> (doctor's role, what its kernel must have).
KERNEL_PINS = {"iscsi": ("iscsi_target", "lio", "LIO needs configfs and target_core_mod"),
               "nfs": ("nfs_server", "knfsd", "knfsd needs the kernel's nfsd")}  # fmt: skip

# cinder's kernel backend -> (doctor's role, the client path os-brick uses for it).
CLIENT_PATHS = {"lvm": ("iscsi_initiator", "open-iscsi", "kernel iSCSI initiator"),
                "nfs": ("nfs_client", "kernel", "kernel NFS client")}  # fmt: skip


def own_kernel_needs(lab: Lab, name: str, choices: Mapping[str, str]) -> list[str]:
    """Why node `name` needs a kernel of its own on this host (empty: the host's kernel, shared, will do)."""
    needs: list[str] = []
    for backend in kernel_backends(lab):
        if backend.node == name:
            reason = CONTAINER_REASON if backend.driver == "lvm" else NFS_REASON
            if f"cinder {backend.driver}: {reason}" not in needs:
                needs.append(f"cinder {backend.driver}: {reason}")
    storage = lab.storage
    if storage.lvm and storage.lvm.node == name and choices.get("block_volumes") != "lvm":
        needs.append("storage.lvm: LVM needs device-mapper, which this host's kernel lacks")
    if storage.lvm and storage.lvm.node == name and storage.lvm.disk:
        needs.append(f"storage.lvm.disk: the volume group is its disk {storage.lvm.disk}, and only a VM has disks")
    for section, (role, implementation, what) in KERNEL_PINS.items():
        spec = getattr(storage, section)
        pinned_here = spec is not None and spec.node == name and spec.implementation == implementation
        if pinned_here and choices.get(role) != implementation:
            needs.append(f"storage.{section}: {what}, which this host's kernel lacks")
    if name in (mounts := nfs_mounting_nodes(lab)):  # glance's store on NFS: a kernel mount on every host
        needs.append(mounts[name])
    # The hypervisor's side of cinder's kernel backends: os-brick logs in with open-iscsi (lvm) or mounts the
    # share with the kernel NFS client (nfs), on the computes and on the clients that play their part.
    # nova's computes do it with their own kernel on every host (a container compute is refused at validate).
    if name in kernel_computes(lab):
        needs.append(f"nova: {compute_reason(lab)}")
        return needs
    drivers = {b.driver for b in kernel_backends(lab)}
    if {"compute", "client"} & set(lab.nodes[name].roles):
        for driver, (role, implementation, what) in CLIENT_PATHS.items():
            if driver in drivers and choices.get(role) != implementation:
                needs.append(f"cinder {driver} volumes reach it through the {what}, which this host's kernel lacks")
    return needs


def node_kind(lab: Lab, name: str, choices: Mapping[str, str]) -> tuple[str, str]:
    """(kind, why) for node `name`."""
    node = lab.nodes[name]
    if node.kind != "auto":
        return node.kind, "set by the lab"
    needs = own_kernel_needs(lab, name, choices)
    if needs:
        return "vm", "auto, a kernel of its own: " + "; ".join(needs)
    if choices.get("node_kind") == "vm":
        return "vm", "auto: KVM runs guests on this host"
    return "container", "auto: nothing it runs needs its own kernel, and a container starts in seconds"
