"""Cross-reference checks over a schema-valid Lab. Pure: yields (location, message, hint) for every problem."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

from stacklab.model.addressing import AUTO_START_OFFSET, AddressPoolExhausted, node_addresses
from stacklab.model.cinder_backends import check_cinder_backends
from stacklab.model.errors import Loc
from stacklab.model.glance_store import check_glance_nfs
from stacklab.model.lab import NOVA_DEFAULT_ZONE, Lab
from stacklab.model.neutron_external import check_neutron_external
from stacklab.model.nova_instances import check_nova_nfs
from stacklab.model.paths import describe_dirs, find_recipe, recipe_dirs
from stacklab.model.services import SERVICE_NEEDS
from stacklab.model.suite_checks import Problem, check_verify, nova_computes

REQUIRED_NETWORKS = ("mgmt", "storage")


def _one_of(names: object) -> str:
    listed = ", ".join(sorted(names)) if names else "none"  # type: ignore[call-overload]
    return f"defined: {listed}"


def cross_check(lab: Lab, *, base_dir: Path | None = None) -> Iterator[Problem]:
    yield from _check_networks(lab)
    yield from _check_images(lab, base_dir)
    yield from _check_nodes(lab)
    yield from _check_storage(lab)
    yield from _check_openstack(lab)
    yield from check_verify(lab)
    yield from _check_suites_shipped(lab)


def _check_networks(lab: Lab) -> Iterator[Problem]:
    for required in REQUIRED_NETWORKS:
        if required not in lab.networks:
            yield (
                ("networks",),
                f"network {required!r} is required",
                "every lab has mgmt (API, SSH) and storage",
            )
    seen_ifnames: dict[str, str] = {}
    for name, net in lab.networks.items():
        ifname = lab.bridge_ifname(name)
        if len(ifname) > 15:
            yield (
                ("networks", name, "bridge"),
                f"kernel name {ifname!r} is longer than 15 characters",
                f"shorten the bridge name to {15 - len(lab.kernel_prefix)} characters or set pin_name",
            )
        if ifname in seen_ifnames:
            yield (
                ("networks", name, "bridge"),
                f"bridge {ifname!r} is also used by network {seen_ifnames[ifname]!r}",
                None,
            )
        seen_ifnames[ifname] = name
        if net.gateway is not None and (
            net.gateway not in net.cidr or net.gateway in (net.cidr.network_address, net.cidr.broadcast_address)
        ):
            yield (
                ("networks", name, "gateway"),
                f"gateway {net.gateway} is not a host address of {net.cidr}",
                None,
            )
        if net.cidr.prefixlen > 28:
            yield ("networks", name, "cidr"), f"{net.cidr} is too small for a lab", "use a /24"
        yield from _check_range(name, net.cidr, net.allow_public)
    names = list(lab.networks)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if lab.networks[first].cidr.overlaps(lab.networks[second].cidr):
                yield (
                    ("networks", second, "cidr"),
                    f"{lab.networks[second].cidr} overlaps network {first!r} ({lab.networks[first].cidr})",
                    "each lab network needs its own subnet",
                )


# Ranges a lab network can never use: "this network", loopback, link-local, multicast, reserved/broadcast.
RESERVED_RANGES = tuple(
    ipaddress.IPv4Network(r) for r in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
)


def _check_range(name: str, cidr: ipaddress.IPv4Network, allow_public: bool) -> Iterator[Problem]:
    reserved = next((r for r in RESERVED_RANGES if r.overlaps(cidr)), None)
    if reserved is not None:
        yield ("networks", name, "cidr"), f"{cidr} overlaps the reserved range {reserved}", "use a private range"
    elif cidr.is_global and not allow_public:
        yield (
            ("networks", name, "cidr"),
            f"{cidr} is a public range: the host could no longer reach the real hosts there",
            "use a private range (10/8, 172.16/12, 192.168/16), or set allow_public: true on the network",
        )


def _check_images(lab: Lab, base_dir: Path | None) -> Iterator[Problem]:
    if base_dir is None:
        return
    dirs = recipe_dirs(base_dir)  # the lab's images/, the user's, the built-in recipes
    for name, image in lab.images.items():
        if find_recipe(dirs, image.recipe) is None:
            hint = f"looked in {describe_dirs(dirs)}; `stacklab recipes` lists the known recipes"
            yield ("images", name, "recipe"), f"recipe {image.recipe!r} not found", hint


def _check_nodes(lab: Lab) -> Iterator[Problem]:
    for name, node in lab.nodes.items():
        if node.image not in lab.images:
            yield ("nodes", name, "image"), f"unknown image {node.image!r}", _one_of(lab.images)
        if "mgmt" in lab.networks and "mgmt" not in node.nics:
            yield ("nodes", name, "nics"), "every node needs a NIC on mgmt", "SSH and the APIs use br-mgmt"
        for net, nic in node.nics.items():
            if net not in lab.networks:
                yield ("nodes", name, "nics", net), f"unknown network {net!r}", _one_of(lab.networks)
                continue
            if nic.address == "auto":
                continue
            cidr = lab.networks[net].cidr
            loc: Loc = ("nodes", name, "nics", net, "address")
            if nic.address not in cidr or nic.address in (cidr.network_address, cidr.broadcast_address):
                yield loc, f"{nic.address} is not a host address of {net} ({cidr})", None
            elif nic.address == lab.networks[net].gateway_address:
                yield loc, f"{nic.address} is the gateway (host) address of {net}", "pick another address"
            elif nic.address < cidr.network_address + AUTO_START_OFFSET:
                pass  # allowed: hand-placed low addresses
        for disk_names in [[d.name for d in node.disks]]:
            dupes = {d for d in disk_names if disk_names.count(d) > 1}
            if dupes:
                yield ("nodes", name, "disks"), f"duplicate disk names: {', '.join(sorted(dupes))}", None
    yield from _check_unique_addresses(lab)


def _check_unique_addresses(lab: Lab) -> Iterator[Problem]:
    owners: dict[tuple[str, ipaddress.IPv4Address], str] = {}
    for name, node in lab.nodes.items():
        for net, nic in node.nics.items():
            if nic.address == "auto":
                continue
            key = (net, nic.address)
            if key in owners:
                yield (
                    ("nodes", name, "nics", net, "address"),
                    f"{nic.address} is already used by node {owners[key]!r}",
                    "addresses are unique per network",
                )
            owners[key] = name
    try:
        node_addresses(lab)
    except AddressPoolExhausted as exc:
        yield ("nodes",), str(exc), "use a larger CIDR or fixed addresses"


def _node_ref(lab: Lab, loc: Loc, node: str, *, needs_storage: bool = True) -> Iterator[Problem]:
    if node not in lab.nodes:
        yield loc, f"unknown node {node!r}", _one_of(lab.nodes)
    elif needs_storage and "storage" not in lab.nodes[node].nics:
        yield loc, f"node {node!r} has no NIC on the storage network", "storage traffic crosses br-storage"


def _check_lvm_disk(lab: Lab) -> Iterator[Problem]:
    """`storage.lvm.disk`: a data disk the node declares, on a node that has disks of its own (a VM); the disk is
    the VG, so a `size` beside it would say something the lab does not build."""
    lvm = lab.storage.lvm
    if lvm is None or lvm.disk is None or lvm.node not in lab.nodes:
        return
    node, loc = lab.nodes[lvm.node], ("storage", "lvm", "disk")
    if node.kind == "container":
        yield loc, f"node {lvm.node!r} is a container, which has no disks of its own", f"give {lvm.node} `kind: vm`"
    elif lvm.disk not in [d.name for d in node.disks]:
        names = ", ".join(d.name for d in node.disks) or "none"
        yield loc, f"node {lvm.node!r} has no disk {lvm.disk!r} (its disks: {names})", "add it to its `disks`"
    if "size" in lvm.model_fields_set:
        yield ("storage", "lvm", "size"), "size and disk both say how large the volume group is", "drop size"


def _check_storage(lab: Lab) -> Iterator[Problem]:
    st = lab.storage
    if st.lvm:
        yield from _node_ref(lab, ("storage", "lvm", "node"), st.lvm.node)
        yield from _check_lvm_disk(lab)
    if st.iscsi:
        yield from _node_ref(lab, ("storage", "iscsi", "node"), st.iscsi.node)
        for i, client in enumerate(st.iscsi.initiators):
            yield from _node_ref(lab, ("storage", "iscsi", "initiators", i), client)
        for i, target in enumerate(st.iscsi.targets):
            loc: Loc = ("storage", "iscsi", "targets", i, "backing")
            if target.backing == "lvm" and (st.lvm is None or st.lvm.node != st.iscsi.node):
                yield loc, "an lvm-backed LUN needs storage.lvm on the same node", "or use backing: file"
            if target.backing == "rbd" and st.ceph is None:
                yield loc, "an rbd-backed LUN needs storage.ceph", "or use backing: file"
        names = [t.name for t in st.iscsi.targets]
        for i, target in enumerate(st.iscsi.targets):
            if names.index(target.name) != i:
                yield ("storage", "iscsi", "targets", i, "name"), f"duplicate target {target.name!r}", None
    if st.nfs:
        yield from _node_ref(lab, ("storage", "nfs", "node"), st.nfs.node)
        if not st.nfs.versions:
            yield ("storage", "nfs", "versions"), "no NFS version to serve", "use [3, 4], [3] or [4]"
        paths = [e.path for e in st.nfs.exports]
        for i, export in enumerate(st.nfs.exports):
            if paths.index(export.path) != i:
                yield ("storage", "nfs", "exports", i, "path"), f"duplicate export path {export.path}", None
    if st.ceph:
        for role in ("mons", "mgrs"):
            for i, node in enumerate(getattr(st.ceph, role)):
                yield from _node_ref(lab, ("storage", "ceph", role, i), node)
        for i, osd in enumerate(st.ceph.osds):
            yield from _node_ref(lab, ("storage", "ceph", "osds", i, "node"), osd.node)
        total = sum(o.count for o in st.ceph.osds)
        if st.ceph.replicas > total:
            yield (
                ("storage", "ceph", "replicas"),
                f"{st.ceph.replicas} replicas need at least as many OSDs; the lab has {total}",
                "add OSDs or lower replicas",
            )
        if len(st.ceph.mons) % 2 == 0:
            yield (
                ("storage", "ceph", "mons"),
                f"{len(st.ceph.mons)} monitors cannot break a tie",
                "use 1 or 3",
            )


def _check_openstack(lab: Lab) -> Iterator[Problem]:
    os_ = lab.openstack
    if os_ is None:
        return
    controllers = lab.nodes_with_role("controller")
    if os_.controller is not None:
        yield from _node_ref(lab, ("openstack", "controller"), os_.controller, needs_storage=False)
    elif len(controllers) != 1:
        yield (
            ("openstack", "controller"),
            f"{len(controllers)} nodes have the controller role; cannot pick the controller",
            "set openstack.controller or give exactly one node the controller role",
        )
    services = set(os_.services)
    for i, service in enumerate(os_.services):
        missing = [n for n in SERVICE_NEEDS.get(service, ()) if n not in services]
        if missing:
            yield (
                ("openstack", "services", i),
                f"{service} needs {', '.join(missing)}",
                "add them to openstack.services",
            )
    yield from _check_unsupported(lab)
    yield from check_neutron_external(lab)  # openstack.neutron.external: its network, pool and the controller's NIC
    if "cinder" in services:
        for i, backend in enumerate(os_.cinder.backends):
            if backend == "rbd" and lab.storage.ceph is None:
                yield ("openstack", "cinder", "backends", i), "backend rbd needs storage.ceph", None
        if os_.cinder.volume_node:
            yield from _node_ref(lab, ("openstack", "cinder", "volume_node"), os_.cinder.volume_node)
        yield from _check_volume_nodes(lab)
    if "nova" in services:
        computes = os_.nova.computes or lab.nodes_with_role("compute")
        for i, node in enumerate(os_.nova.computes):
            yield from _node_ref(lab, ("openstack", "nova", "computes", i), node)
        if not computes:
            yield (
                ("openstack", "nova", "computes"),
                "nova needs at least one compute node",
                "give a node the compute role",
            )
        for field, value in (("images_type", os_.nova.images_type), ("instances_on", os_.nova.instances_on)):
            nova_section = {"rbd": "ceph"}.get(value)  # instances_on nfs: check_nova_nfs in _check_unsupported
            if nova_section and getattr(lab.storage, nova_section) is None:
                yield ("openstack", "nova", field), f"{value} needs storage.{nova_section}", None
        yield from _check_nova_overrides(lab, computes)
    if "swift" in services:
        swift_nodes = os_.swift.nodes or lab.nodes_with_role("swift")
        if os_.swift.proxy is not None:  # serves on br-mgmt: no storage NIC needed
            yield from _node_ref(lab, ("openstack", "swift", "proxy"), os_.swift.proxy, needs_storage=False)
        for i, node in enumerate(os_.swift.nodes):
            yield from _node_ref(lab, ("openstack", "swift", "nodes", i), node)
        if len(swift_nodes) < os_.swift.replicas:
            yield (
                ("openstack", "swift", "replicas"),
                f"{os_.swift.replicas} replicas need {os_.swift.replicas} swift nodes; the lab has {len(swift_nodes)}",
                "give more nodes the swift role or lower replicas",
            )


def _check_volume_nodes(lab: Lab) -> Iterator[Problem]:
    """`openstack.cinder.volume_nodes`: each a node on the storage network (RBD is reached over br-storage), once,
    the controller among them (its cinder-volume is the one `up` waits for first; the others join it)."""
    assert lab.openstack is not None
    cinder = lab.openstack.cinder
    if not cinder.volume_nodes:
        return
    controller = lab.openstack.controller or next(iter(lab.nodes_with_role("controller")), None)
    for i, node in enumerate(cinder.volume_nodes):
        if cinder.volume_nodes.index(node) != i:
            yield ("openstack", "cinder", "volume_nodes", i), f"{node} is listed twice", None
        else:
            yield from _node_ref(lab, ("openstack", "cinder", "volume_nodes", i), node)
    if controller is not None and controller not in cinder.volume_nodes:
        yield (
            ("openstack", "cinder", "volume_nodes"),
            f"the controller ({controller}) runs cinder-volume in this stacklab; it is missing from volume_nodes",
            f"list it first, e.g. volume_nodes: [{controller}, {cinder.volume_nodes[0]}]",
        )
    if cinder.volume_node is not None:
        yield (
            ("openstack", "cinder", "volume_node"),
            "volume_node and volume_nodes both name where cinder-volume runs",
            "keep volume_nodes",
        )


def _check_unsupported(lab: Lab) -> Iterator[Problem]:
    """Choices the schema names but this stacklab does not build yet: refused here, before anything is touched
    (the service drivers refuse them as well, but only in the middle of `up`)."""
    os_ = lab.openstack
    if os_ is None:
        return
    services = set(os_.services)
    yield from check_glance_nfs(lab)  # store nfs: the export, VM glance nodes on br-storage
    if "glance" in services and os_.glance.store == "rbd":
        yield from _check_glance_rbd(lab)
    if "cinder" in services:
        yield from check_cinder_backends(lab)  # lvm and nfs: VM volume nodes, storage.lvm / storage.nfs
        controller = os_.controller or next(iter(lab.nodes_with_role("controller")), None)
        volume_node = os_.cinder.volume_node
        if volume_node is not None and volume_node != controller:
            yield (
                ("openstack", "cinder", "volume_node"),
                f"cinder-volume runs on the controller ({controller}) in this stacklab, not on {volume_node}",
                "the RBD backend needs no local disk: drop volume_node",
            )
    ceph = lab.storage.ceph
    # The RBD users the service drivers configure (openstack/cinder.py CEPH_POOL, storage/ceph/clients.py
    # CEPH_USER, openstack/nova.py RBD_POOL): checked here too, or a lab without them fails only after its Ceph
    # cluster is built.
    rbd_needs = []
    if "cinder" in services and "rbd" in os_.cinder.backends:
        rbd_needs.append((("openstack", "cinder", "backends"), "cinder's rbd backend needs", "volumes"))
    if "nova" in services and any(os_.nova.images_type_of(c) == "rbd" for c in nova_computes(lab)):
        rbd_needs.append((("openstack", "nova", "images_type"), "nova's rbd images need", "vms"))
    for loc, who, pool in rbd_needs:
        if ceph is None:
            continue  # "needs storage.ceph" is reported by _check_openstack
        missing = [f"pool {pool}"] if pool not in ceph.pools else []
        missing += ["client cinder"] if "cinder" not in ceph.clients else []
        if missing:
            yield (
                loc,
                f"{who} {' and '.join(missing)} in storage.ceph",
                f"add {pool} to storage.ceph.pools and cinder to storage.ceph.clients",
            )
    yield from check_nova_nfs(lab)  # instances_on nfs: the export, VM computes on br-storage, file disks
    if "nova" in services and os_.nova.instances_on == "rbd":
        yield (
            ("openstack", "nova", "instances_on"),
            "nova instances_on 'rbd' is not supported by this stacklab yet",
            "use images_type: rbd for instance disks on Ceph, instances_on: nfs, or the default local disks",
        )


def _check_glance_rbd(lab: Lab) -> Iterator[Problem]:
    """glance's rbd store (openstack/glance.py RBD_POOL, RBD_USER): the pool, the client and, because the Ceph step
    puts client keyrings on the storage network's nodes, a br-storage NIC on the controller."""
    os_, ceph, loc = lab.openstack, lab.storage.ceph, ("openstack", "glance", "store")
    assert os_ is not None
    if ceph is None:
        yield loc, "glance's rbd store needs storage.ceph", "add storage.ceph with an images pool, or use store: file"
        return
    missing = [f"pool {p}" for p in ("images",) if p not in ceph.pools]
    missing += ["client glance"] if "glance" not in ceph.clients else []
    if missing:
        yield (
            loc,
            f"glance's rbd store needs {' and '.join(missing)} in storage.ceph",
            "add images to storage.ceph.pools and glance to storage.ceph.clients",
        )
    controller = os_.controller or next(iter(lab.nodes_with_role("controller")), None)
    node = lab.nodes.get(controller) if controller else None
    if node is not None and "storage" not in node.nics:
        yield (
            loc,
            f"glance's rbd store reads Ceph over br-storage, and {controller} has no storage NIC",
            f"add storage to {controller}'s nics",
        )


def _check_nova_overrides(lab: Lab, computes: list[str]) -> Iterator[Problem]:
    """`openstack.nova.overrides`: per compute node, its images_type and zone. A compute whose disks differ from the
    lab's must be in a zone of its own: a boot that names no zone stays in the default zone, so it never lands on
    local disks when the lab's suites expect shared ones (or the other way round)."""
    assert lab.openstack is not None
    nova = lab.openstack.nova
    for node, override in nova.overrides.items():
        loc: Loc = ("openstack", "nova", "overrides", node)
        if node not in computes:
            yield loc, f"{node} is not a nova compute node", f"nova's computes: {', '.join(computes) or 'none'}"
            continue
        kind = nova.images_type_of(node)
        if kind == "rbd" and lab.storage.ceph is None:
            yield (*loc, "images_type"), "rbd needs storage.ceph", None
        if override.availability_zone == NOVA_DEFAULT_ZONE:
            yield (
                (*loc, "availability_zone"),
                f"{NOVA_DEFAULT_ZONE} is nova's default zone, where every compute without a zone of its own is",
                "name a zone of its own, e.g. local-disk, or drop availability_zone",
            )
        elif kind != nova.images_type and override.availability_zone is None:
            yield (
                (*loc, "images_type"),
                f"{node} keeps its instance disks as {kind}, the lab's computes as {nova.images_type}: a boot that "
                "names no zone could land on it",
                f"give it a zone of its own: overrides: {{{node}: {{images_type: {kind}, availability_zone: "
                "local-disk}}",
            )


def shipped_suites() -> list[str]:
    """The suites this stacklab ships: test_<name>.py in the stacklab.suites package directory. Read as file
    names, not imported: the model layer never loads pytest or the suites."""
    suites_dir = Path(__file__).resolve().parent.parent / "suites"
    return sorted(p.stem.removeprefix("test_") for p in suites_dir.glob("test_*.py"))


def _check_suites_shipped(lab: Lab) -> Iterator[Problem]:
    """A suite the lab lists must exist here: `verify` would otherwise prove less than the lab file promises."""
    shipped = shipped_suites()
    for i, suite in enumerate(lab.verify.suites):
        if suite not in shipped:
            yield (
                ("verify", "suites", i),
                f"suite {suite!r} is not shipped by this stacklab",
                f"shipped: {', '.join(shipped)}; run a file of your own with `stacklab verify LAB --suite ./file.py`",
            )
