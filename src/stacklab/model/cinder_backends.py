"""cinder's kernel backends (`lvm`, `nfs`) resolved from a Lab: where each cinder-volume runs, with which target
helper and port, and the checks that refuse what cannot work. Pure (model layer): expand and checks import it.

Both backends need the node's own kernel: LVM needs device-mapper and LIO/tgt an iSCSI target on the node, and
cinder's NFS driver mounts the share with the kernel NFS client. OpenStack-Ansible's storage page says it plainly
for iSCSI: cinder-volume must run "directly on a physical host (not into a container)". A stacklab VM node is that
host; a container shares the lab host's kernel, which is refused at validate with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from stacklab.model.errors import Loc
from stacklab.model.lab import CinderLvm, CinderNfs, Lab, NfsExport

Problem = tuple[Loc, str, str | None]
ISCSI_PORT = 3260
TGT_PORT_BESIDE_LIO = 3261  # LIO (in the kernel) holds <storage IP>:3260 on the same node
CONTAINER_REASON = (
    "cinder-volume for an iSCSI backend must run directly on a physical host, not in a container (OpenStack-Ansible's "
    "storage page: container iSCSI connectivity); here a VM node is that host"
)
NFS_REASON = "cinder's NFS driver mounts the share with the node's kernel NFS client; a container shares the host's"
COMPUTE_REASON = (
    "nova-compute connects cinder's {drivers} volumes through os-brick with the node's own kernel (an iSCSI session "
    "of open-iscsi's initiator, a kernel NFS mount); a container shares the host's kernel, whose sessions and mounts "
    "are not the node's"
)


@dataclass(frozen=True)
class KernelBackend:
    """One cinder backend section served by a cinder-volume outside the controller."""

    name: str  # the section, volume_backend_name and volume type: lvm-lioadm, lvm-tgtadm, nfs
    driver: str  # lvm | nfs
    node: str  # runs its cinder-volume
    target_helper: str = ""  # lvm: lioadm | tgtadm
    target_port: int = 0  # lvm: the portal's port on the node's storage address


def lvm_settings(lab: Lab) -> CinderLvm:
    assert lab.openstack is not None
    return lab.openstack.cinder.lvm or CinderLvm()


def nfs_settings(lab: Lab) -> CinderNfs:
    assert lab.openstack is not None
    return lab.openstack.cinder.nfs or CinderNfs()


def lvm_node(lab: Lab) -> str | None:
    if lab.storage.lvm is None:
        return None
    return lvm_settings(lab).node or lab.storage.lvm.node


def nfs_node(lab: Lab) -> str | None:
    assert lab.openstack is not None
    explicit = nfs_settings(lab).node
    if explicit:
        return explicit
    if "lvm" in lab.openstack.cinder.backends and lvm_node(lab):
        return lvm_node(lab)
    return lab.storage.nfs.node if lab.storage.nfs else None


def kernel_backends(lab: Lab) -> list[KernelBackend]:
    """The lvm and nfs backends the lab asks for, in a stable order (empty without cinder)."""
    os_ = lab.openstack
    if os_ is None or "cinder" not in os_.services:
        return []
    out: list[KernelBackend] = []
    if "lvm" in os_.cinder.backends and (node := lvm_node(lab)):
        helpers = list(dict.fromkeys(lvm_settings(lab).target_helpers))
        for helper in helpers:
            port = TGT_PORT_BESIDE_LIO if helper == "tgtadm" and "lioadm" in helpers else ISCSI_PORT
            out.append(KernelBackend(f"lvm-{helper}", "lvm", node, helper, port))
    if "nfs" in os_.cinder.backends and (node := nfs_node(lab)):
        out.append(KernelBackend("nfs", "nfs", node))
    return out


def nfs_exports(lab: Lab) -> list[str]:
    """The export paths cinder's NFS backend keeps volumes on."""
    if lab.storage.nfs is None:
        return []
    wanted = nfs_settings(lab).exports
    return [e.path for e in lab.storage.nfs.exports if not wanted or e.name in wanted]


def named_export(lab: Lab, wanted: str | None) -> NfsExport | None:
    """The storage.nfs export named `wanted`, else (None) the first; None when the lab has no such export. Where
    one service keeps its files (glance's store, nova's instances_path)."""
    nfs = lab.storage.nfs
    if nfs is None or not nfs.exports:
        return None
    return next((e for e in nfs.exports if wanted in (None, e.name)), None)


def _vm_node(lab: Lab, loc: Loc, node: str, reason: str) -> Iterator[Problem]:
    if node not in lab.nodes:
        yield loc, f"unknown node {node!r}", f"defined: {', '.join(sorted(lab.nodes))}"
        return
    spec = lab.nodes[node]
    if spec.kind == "container":  # `auto` becomes a VM node for it on every host (plan/node_kind.py)
        yield loc, f"node {node!r} is a container: {reason}", f"give {node} `kind: vm` (or `auto`)"
    if "storage" not in spec.nics:
        yield loc, f"node {node!r} has no NIC on the storage network", "the backend serves and mounts over br-storage"


def check_cinder_backends(lab: Lab) -> Iterator[Problem]:
    """Problems with the lab's cinder lvm/nfs backends (file:line through their locations)."""
    os_ = lab.openstack
    if os_ is None or "cinder" not in os_.services:
        return
    cinder = os_.cinder
    for i, backend in enumerate(cinder.backends):
        if cinder.backends.index(backend) != i:
            yield ("openstack", "cinder", "backends", i), f"backend {backend!r} is listed twice", None
    if "lvm" in cinder.backends:
        i = cinder.backends.index("lvm")
        if lab.storage.lvm is None:
            yield ("openstack", "cinder", "backends", i), "backend lvm needs storage.lvm (its volume group)", None
        else:
            node, loc = lvm_node(lab), ("openstack", "cinder", "lvm", "node")
            if cinder.lvm is not None and cinder.lvm.node not in (None, lab.storage.lvm.node):
                yield loc, f"the volume group is on {lab.storage.lvm.node} (storage.lvm.node), not on {node}", None
            else:
                where = loc if cinder.lvm is not None and cinder.lvm.node else ("openstack", "cinder", "backends", i)
                yield from _vm_node(lab, where, str(node), CONTAINER_REASON)
            helpers = cinder.lvm.target_helpers if cinder.lvm else []
            for j, helper in enumerate(helpers):
                if helpers.index(helper) != j:
                    yield ("openstack", "cinder", "lvm", "target_helpers", j), f"{helper} is listed twice", None
    elif cinder.lvm is not None:
        yield ("openstack", "cinder", "lvm"), "settings for an lvm backend the lab does not list", "add lvm to backends"
    if "nfs" in cinder.backends:
        i = cinder.backends.index("nfs")
        nfs = lab.storage.nfs
        if nfs is None or not nfs.exports:
            yield ("openstack", "cinder", "backends", i), "backend nfs needs storage.nfs with an export", None
        else:
            names = [e.name for e in nfs.exports]
            for j, name in enumerate(cinder.nfs.exports if cinder.nfs else []):
                if name not in names:
                    yield (
                        ("openstack", "cinder", "nfs", "exports", j),
                        f"unknown export {name!r}",
                        (f"storage.nfs exports: {', '.join(names)}"),
                    )
            explicit = cinder.nfs is not None and cinder.nfs.node
            where = ("openstack", "cinder", "nfs", "node") if explicit else ("openstack", "cinder", "backends", i)
            yield from _vm_node(lab, where, str(nfs_node(lab)), NFS_REASON)
    elif cinder.nfs is not None:
        yield ("openstack", "cinder", "nfs"), "settings for an nfs backend the lab does not list", "add nfs to backends"
    yield from _check_computes(lab)


def kernel_computes(lab: Lab) -> list[str]:
    """nova's computes when the lab's cinder has a kernel backend (they connect its volumes with their kernel)."""
    os_ = lab.openstack
    if os_ is None or "nova" not in os_.services or not kernel_backends(lab):
        return []
    return list(os_.nova.computes or lab.nodes_with_role("compute"))


def compute_reason(lab: Lab) -> str:
    drivers = sorted({b.driver for b in kernel_backends(lab)})
    return COMPUTE_REASON.format(drivers=" and ".join(drivers))


def _check_computes(lab: Lab) -> Iterator[Problem]:
    """A compute of a lab with lvm/nfs volumes is a VM node (or `auto`, which becomes one) on the storage network."""
    for node in kernel_computes(lab):
        spec = lab.nodes.get(node)
        if spec is None:  # an unknown node in nova.computes is reported by the nova checks
            continue
        if spec.kind == "container":
            yield (
                ("nodes", node, "kind"),
                f"compute {node!r} is a container: {compute_reason(lab)}",
                f"give {node} `kind: vm` (or `auto`)",
            )
        if "storage" not in spec.nics:
            yield (
                ("nodes", node, "nics"),
                f"compute {node!r} has no NIC on the storage network",
                "os-brick reaches the iSCSI portals and the NFS server over br-storage",
            )


def cinder_config(lab: Lab, addresses: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """cinder's `config` in its resource spec: the section as declared, with the kernel backends resolved (node
    addresses, volume group, NFS shares). A lab without lvm/nfs gets exactly the keys it had before they existed,
    so recorded labs plan no change."""
    assert lab.openstack is not None
    config = lab.openstack.cinder.model_dump(mode="json")
    for key in ("lvm", "nfs"):
        if config.get(key) is None:
            config.pop(key, None)
    backends = kernel_backends(lab)
    if not backends:
        return config
    nodes = list(dict.fromkeys(b.node for b in backends))
    config["kernel_nodes"] = {
        n: {"mgmt": str(addresses[n]["mgmt"]), "storage": str(addresses[n]["storage"]),
            "backends": [b.name for b in backends if b.node == n]}
        for n in nodes
    }  # fmt: skip
    config["kernel_backends"] = [asdict(b) for b in backends]
    if lab.storage.lvm is not None:
        config["volume_group"] = lab.storage.lvm.vg
        config["use_chap_auth"] = lvm_settings(lab).chap
    if lab.storage.nfs is not None and any(b.driver == "nfs" for b in backends):
        server = str(addresses[lab.storage.nfs.node]["storage"])
        config["nfs_shares"] = [f"{server}:{path}" for path in nfs_exports(lab)]
        settings = nfs_settings(lab)
        config["nfs_mount_options"] = settings.mount_options
        config["nfs_mount_point_base"] = settings.mount_point_base
    return config
