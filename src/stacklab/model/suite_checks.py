"""Cross-reference checks of the lab's `verify.suites`: what each shipped suite needs from the lab to prove its flow
(services, two computes on shared disks, two cinder-volume nodes, handoff devices, a local-disk compute...). Pure,
like model/checks.py, which calls `check_verify`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from stacklab.model.errors import Loc
from stacklab.model.lab import NOVA_DEFAULT_ZONE, Lab

Problem = tuple[Loc, str, str | None]

SUITE_NEEDS: dict[str, tuple[str, ...]] = {
    "openstack": ("keystone",),
    "volumes": ("cinder",),
    "attach": ("cinder", "nova"),
    "replication": ("swift",),
    "caching": ("glance", "nova"),
    "evacuation": ("nova",),
    "failover": ("cinder",),
    "swift_loss": ("swift",),
    "migration": ("nova",),
    "network": ("glance", "neutron", "nova"),
}


def nova_computes(lab: Lab) -> list[str]:
    assert lab.openstack is not None
    return lab.openstack.nova.computes or lab.nodes_with_role("compute")


def check_verify(lab: Lab) -> Iterator[Problem]:
    services = set(lab.openstack.services) if lab.openstack else set()
    for i, suite in enumerate(lab.verify.suites):
        loc: Loc = ("verify", "suites", i)
        missing = [s for s in SUITE_NEEDS.get(suite, ()) if s not in services]
        if missing:
            yield loc, f"suite {suite} needs {', '.join(missing)}", "add them to openstack.services"
            continue
        check = _SUITE_CHECKS.get(suite)
        if check is not None:
            yield from check(lab, loc)


def _evacuation(lab: Lab, loc: Loc) -> Iterator[Problem]:
    assert lab.openstack is not None
    nova = lab.openstack.nova
    computes = [c for c in nova_computes(lab) if nova.zone_of(c) == NOVA_DEFAULT_ZONE]
    if len(computes) < 2:
        zoned = sorted(c for c in nova_computes(lab) if c not in computes)
        hint = f"{', '.join(zoned)}: in a zone of its own; evacuation stays in {NOVA_DEFAULT_ZONE}"
        yield loc, "evacuation needs two compute nodes", hint if zoned else None
    if nova.images_type != "rbd" and nova.instances_on == "local":
        yield (
            loc,
            "evacuation needs instance disks on shared storage",
            "set openstack.nova.images_type: rbd (with storage.ceph)",
        )


def _migration(lab: Lab, loc: Loc) -> Iterator[Problem]:
    assert lab.openstack is not None
    nova = lab.openstack.nova
    shared = [c for c in nova_computes(lab) if nova.zone_of(c) == NOVA_DEFAULT_ZONE]
    if nova.instances_on == "nfs":  # every compute's disks are files on the one export (rbd is refused with it)
        if len(shared) < 2:
            yield (
                loc,
                f"live migration needs two compute nodes on nova's NFS instances_path in zone {NOVA_DEFAULT_ZONE}",
                "give the lab a second compute",
            )
    elif len([c for c in shared if nova.images_type_of(c) == "rbd"]) < 2:
        yield (
            loc,
            f"live migration needs two compute nodes with instance disks on RBD in zone {NOVA_DEFAULT_ZONE}",
            "set openstack.nova.images_type: rbd (with storage.ceph) and give the lab a second compute",
        )


def _failover(lab: Lab, loc: Loc) -> Iterator[Problem]:
    assert lab.openstack is not None
    cinder = lab.openstack.cinder
    if len(set(cinder.volume_nodes)) < 2:
        yield (
            loc,
            "failover needs cinder-volume on two nodes sharing one backend",
            "set openstack.cinder.volume_nodes, e.g. [infra1, compute2] (the controller first)",
        )
    if "rbd" not in cinder.backends:
        yield loc, "failover needs a backend both volume nodes reach", "use backends: [rbd]"


def _swift_loss(lab: Lab, loc: Loc) -> Iterator[Problem]:
    assert lab.openstack is not None
    swift = lab.openstack.swift
    nodes = swift.nodes or lab.nodes_with_role("swift")
    if swift.replicas < 2 or len(nodes) < 2:
        yield (
            loc,
            f"swift_loss needs 2 replicas or more on 2 swift nodes or more (the lab: {swift.replicas} on {len(nodes)})",
            "a lost node must leave a quorum of the replicas",
        )
    elif swift.devices * len(nodes) <= swift.replicas:
        yield (
            loc,
            f"swift_loss needs more devices than replicas: {len(nodes)} node(s) x {swift.devices} "
            f"device(s) for {swift.replicas} replicas leave no handoff device for a lost node's replica",
            "set openstack.swift.devices: 2",
        )


def _storage(lab: Lab, loc: Loc) -> Iterator[Problem]:
    if not any((lab.storage.iscsi, lab.storage.nfs, lab.storage.ceph)):
        yield loc, "suite storage needs storage.iscsi, nfs or ceph", None


# `verify` waits at most this long for nova's cache manager to remove an unused base image (suite caching)
CACHE_AGEING_LIMIT = 600


def _caching(lab: Lab, loc: Loc) -> Iterator[Problem]:
    """Suite caching boots on a compute with local disks, reads glance's cache and watches nova's cache manager
    remove the unused base image: the lab must have all three, within a bounded wait."""
    assert lab.openstack is not None
    os_ = lab.openstack
    if not any(os_.nova.images_type_of(c) == "qcow2" for c in nova_computes(lab)):
        yield (
            loc,
            "suite caching needs a compute with local instance disks (images_type qcow2): nova keeps no base image "
            "cache for rbd disks",
            "add a compute, e.g. openstack.nova.overrides: {compute3: {images_type: qcow2, availability_zone: "
            "local-disk}}",
        )
    if not os_.glance.cache:
        yield loc, "suite caching needs glance's image cache", "set openstack.glance.cache: true"
    cache = os_.nova.image_cache
    if cache is None or not cache.remove_unused_base_images:
        yield (
            loc,
            "suite caching watches nova's cache manager remove an unused base image: "
            + ("the lab leaves nova's defaults (a pass every 2400 s, removal after 86400 s)" if cache is None
               else "remove_unused_base_images is off"),
            "set openstack.nova.image_cache: {manager_interval: 20, remove_unused_original_minimum_age_seconds: 60}",
        )  # fmt: skip
    elif (bound := cache.remove_unused_original_minimum_age_seconds + 2 * cache.manager_interval) > CACHE_AGEING_LIMIT:
        yield (
            ("openstack", "nova", "image_cache"),
            f"suite caching would wait up to {bound} s for an unused base image to go (the minimum age plus two "
            f"manager passes); verify waits at most {CACHE_AGEING_LIMIT} s",
            "e.g. manager_interval: 20, remove_unused_original_minimum_age_seconds: 60",
        )


def _network(lab: Lab, loc: Loc) -> Iterator[Problem]:
    computes = nova_computes(lab)
    if len(computes) < 2:
        yield loc, "suite network needs two compute nodes (one guest on each, across the VXLAN network)", None
    # libvirt plugs a guest's NIC as a tap device: a container compute needs the host's /dev/net/tun passed in
    lacking = [
        c for c in computes if c in lab.nodes and lab.nodes[c].kind == "container" and "tun" not in lab.nodes[c].devices
    ]
    if lacking:
        yield (
            loc,
            f"suite network boots guests with a NIC (a tap device) on {', '.join(lacking)}: container computes "
            "need /dev/net/tun",
            "add `devices: [tun]` to those nodes",
        )


_SUITE_CHECKS: dict[str, Callable[[Lab, Loc], Iterator[Problem]]] = {
    "evacuation": _evacuation,
    "migration": _migration,
    "failover": _failover,
    "swift_loss": _swift_loss,
    "storage": _storage,
    "caching": _caching,
    "network": _network,
}
