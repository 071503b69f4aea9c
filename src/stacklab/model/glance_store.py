"""glance's `nfs` store resolved from a Lab: which nodes run glance-api, which export they mount, and the checks that
refuse what cannot work. Pure (model layer): expand, checks and node_kind import it.

OpenStack-Ansible's storage page: the File System store has "no mechanism of its own to replicate the image between
Image service hosts", so it recommends "a shared storage back end (via a file system mount)" for every glance-api.
With `store: nfs` every node in `openstack.glance.nodes` (default: the controller) runs glance-api with its file
store directory a kernel NFS mount of one storage.nfs export, over br-storage; the catalog's image endpoint is the
first node's (where a load balancer's address would be); the database stays in the controller's MariaDB.
The mount is the node's own kernel's: a container shares the lab host's kernel, so those nodes are VM nodes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from stacklab.model.cinder_backends import named_export
from stacklab.model.errors import Loc
from stacklab.model.lab import Lab, NfsExport
from stacklab.model.nova_instances import instances_export, nova_nfs_nodes, nova_on_nfs

Problem = tuple[Loc, str, str | None]
IMAGES_DIR = "/var/lib/glance/images"
NFS_MOUNT_OPTIONS = "vers=4.2"
GLANCE_NFS_REASON = (
    "glance's file store is a kernel NFS mount on each glance-api node; a container shares the lab host's kernel "
    "(stacklab makes OpenStack's NFS mounts in a VM node's own kernel)"
)


def _controller(lab: Lab) -> str | None:
    assert lab.openstack is not None
    return lab.openstack.controller or next(iter(lab.nodes_with_role("controller")), None)


def glance_on_nfs(lab: Lab) -> bool:
    os_ = lab.openstack
    return os_ is not None and "glance" in os_.services and os_.glance.store == "nfs"


def glance_nodes(lab: Lab) -> list[str]:
    """The nodes that run glance-api: the controller, or with store nfs `openstack.glance.nodes` (default it)."""
    assert lab.openstack is not None
    controller = _controller(lab)
    default = [controller] if controller else []
    if not glance_on_nfs(lab):
        return default
    return list(dict.fromkeys(lab.openstack.glance.nodes)) or default


def glance_endpoint_node(lab: Lab) -> str | None:
    """The glance-api node whose address is glance's endpoint (the catalog's, and cinder's glance_api_servers):
    the first of glance's nodes."""
    return next(iter(glance_nodes(lab)), None)


def glance_export(lab: Lab) -> NfsExport | None:
    """The storage.nfs export glance's store lives on (the one named, else the first)."""
    return named_export(lab, lab.openstack.glance.export) if lab.openstack else None


def nfs_mounting_nodes(lab: Lab) -> dict[str, str]:
    """node -> why it mounts an NFS export with its kernel client for an OpenStack service (glance's store, nova's
    instances_path)."""
    found = {n: f"glance store nfs: {GLANCE_NFS_REASON}" for n in glance_nodes(lab)} if glance_on_nfs(lab) else {}
    for node, why in nova_nfs_nodes(lab).items():
        found[node] = f"{found[node]}; {why}" if node in found else why
    return found


def check_glance_nfs(lab: Lab) -> Iterator[Problem]:
    """`openstack.glance.store: nfs` (with `nodes` and `export`): the export exists, each glance node is a node on
    br-storage that is not a container, listed once; `nodes`/`export` mean nothing with another store."""
    os_ = lab.openstack
    if os_ is None or "glance" not in os_.services:
        return
    glance, loc = os_.glance, ("openstack", "glance")
    if glance.store != "nfs":
        for field in ("nodes", "export"):
            if getattr(glance, field):
                yield (*loc, field), f"glance {field} are used with store: nfs only", "set store: nfs or drop it"
        return
    nfs = lab.storage.nfs
    if nfs is None or not nfs.exports:
        yield (*loc, "store"), "glance's nfs store needs storage.nfs with an export", "add storage.nfs.exports"
    elif glance.export is not None and glance_export(lab) is None:
        names = ", ".join(e.name for e in nfs.exports)
        yield (*loc, "export"), f"unknown export {glance.export!r}", f"storage.nfs exports: {names}"
    mine, nova_export = glance_export(lab), instances_export(lab) if nova_on_nfs(lab) else None
    if mine is not None and nova_export is not None and mine.path == nova_export.path:
        yield (
            (*loc, "export" if glance.export else "store"),
            f"export {mine.name!r} is nova's instances_path as well",
            "give glance's store and nova's instances an export each",
        )
    for i, node in enumerate(glance.nodes):
        where: Loc = (*loc, "nodes", i)
        if glance.nodes.index(node) != i:
            yield where, f"{node} is listed twice", None
        elif node not in lab.nodes:
            yield where, f"unknown node {node!r}", f"defined: {', '.join(sorted(lab.nodes))}"
    for node in glance_nodes(lab):
        if node not in lab.nodes:
            continue
        where = (*loc, "nodes", glance.nodes.index(node)) if node in glance.nodes else (*loc, "store")
        spec = lab.nodes[node]
        if spec.kind == "container":  # `auto` becomes a VM node for it (plan/node_kind.py)
            yield where, f"node {node!r} is a container: {GLANCE_NFS_REASON}", f"give {node} `kind: vm` (or `auto`)"
        if "storage" not in spec.nics:
            yield where, f"node {node!r} has no NIC on the storage network", "it mounts glance's export over br-storage"


def glance_config(lab: Lab, addresses: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """glance's `config` in its resource spec: the section as declared; with store nfs, the glance nodes resolved
    (their br-mgmt addresses, first = the catalog's endpoint) and the share. A lab without store nfs gets exactly
    the keys it had before `nodes` and `export` existed, so recorded labs plan no change."""
    assert lab.openstack is not None
    config = lab.openstack.glance.model_dump(mode="json")
    config.pop("nodes", None)
    config.pop("export", None)
    export = glance_export(lab)
    if not glance_on_nfs(lab) or export is None or lab.storage.nfs is None:
        return config
    server = str(addresses[lab.storage.nfs.node]["storage"])
    config["nodes"] = {n: str(addresses[n]["mgmt"]) for n in glance_nodes(lab)}
    config["share"] = f"{server}:{export.path}"
    config["mount_options"] = NFS_MOUNT_OPTIONS
    return config
