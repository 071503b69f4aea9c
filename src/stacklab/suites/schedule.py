"""Which suites `stacklab verify` may run side by side. Pure: names in, phases of lanes out.

Most of a suite's time is waiting (a replicator pass, a service reported down, a guest booting under TCG), so
suites that touch disjoint parts of the lab run at once, each lane a pytest process of its own:

- phase 1, the lab's health: `infra` (every node's units, addresses, names and reach; it stops nothing and fails
  on any unit not running) beside `openstack` (each service through its API, one guest and one heat stack: nothing
  stopped, no unit failed), then `storage` alone (it kills a Ceph OSD and a monitor and restarts the iSCSI target
  mid-write, which `infra` must not see, and waits for the cluster to heal). Side by side they take the longer of
  infra and openstack, not their sum (on the default lab, a quiet host: 95 s and 42 s);
- phase 2, side by side: the cinder lane (`volumes`, then `failover`: volumes through cinder's API and a client
  node's QEMU, then one cinder-volume stopped and its volume handed over; no guest) and the network lane
  (`network`: two guests with NICs, each pinned to one of the lab's first two computes, neutron's agents; no
  volume, nothing stopped). `failover` stops a cinder-volume: nothing else may make a volume meanwhile (one asked
  for before cinder sees the service down may be given to it and stay `creating`), hence `volumes` before it in
  its lane and `attach` in the next phase;
- phase 3, side by side: the main lane, everything else in the order asked (`attach`: cinder volumes on nova
  guests; `evacuation` and live `migration`, which stop, force down, disable and empty an RBD compute, so no other
  lane's guest may be on the RBD computes; tempest; a user's own files), the Swift lane (`replication`,
  `swift_loss`: objects through the proxy, Swift daemons on the storage nodes stopped and started) and the
  local-disk lane (`caching`: its guests only in the lab's local-disk zone, i.e. the qcow2 compute, whose
  base-image cache it watches).

The Swift suites boot no guest, touch no volume and no compute; no main-lane guest can land in the local-disk zone
(a boot naming no zone, an evacuation or a migration stays in the default zone); no lane stops what another lane of
its phase uses. Guests are built in a directory of their own on the controller (guest.py).

A suite's own fixtures stay in its lane; the lab baseline (nothing left behind, every compute serving) is taken by
verify itself before the first phase and after the last, since no lane sees the lab whole.
"""

from __future__ import annotations

from collections.abc import Sequence

HEALTH = {"infra": ("infra",), "openstack": ("openstack",)}  # phase 1's lanes, side by side
STORAGE = "storage"  # then alone: it kills storage daemons that the other health suites look at
APART = {"cinder": ("volumes", "failover"), "network": ("network",)}  # phase 2's lanes, side by side
SIDE_LANES = {"swift": ("replication", "swift_loss"), "local-disk": ("caching",)}  # beside the main lane
MAIN = "main"

Lane = tuple[str, list[str]]  # (lane name, suites in order)


def phases(names: Sequence[str]) -> list[list[Lane]]:
    """The suites asked for, as phases run one after the other, each a list of lanes run at once (no empty lane
    or phase; the order asked is kept inside every lane)."""
    health = {lane: [n for n in names if n in members] for lane, members in HEALTH.items()}
    storage = [n for n in names if n == STORAGE]
    apart = {lane: [n for n in names if n in members] for lane, members in APART.items()}
    side = {lane: [n for n in names if n in members] for lane, members in SIDE_LANES.items()}
    taken = set(storage).union(*health.values(), *apart.values(), *side.values())
    main = [n for n in names if n not in taken]
    out: list[list[Lane]] = []
    first = [(lane, suites) for lane, suites in health.items() if suites]
    if first:
        out.append(first)
    if storage:
        out.append([(STORAGE, storage)])
    second = [(lane, suites) for lane, suites in apart.items() if suites]
    if second:
        out.append(second)
    third = [(MAIN, main)] if main else []
    third += [(lane, suites) for lane, suites in side.items() if suites]
    if third:
        out.append(third)
    return out


def is_serial(plan: list[list[Lane]]) -> bool:
    """True when no two lanes run at once (one pytest process can run it all, as before lanes)."""
    return all(len(phase) == 1 for phase in plan)
