"""Which suites `stacklab verify` may run side by side. Pure: names in, phases of lanes out.

Most of a suite's time is waiting (a replicator pass, a service reported down, a guest booting under TCG), so
suites that touch disjoint parts of the lab run at once, each lane a pytest process of its own:

- phase 1, alone: the suites that check the whole lab's health (`infra`, `storage`, `openstack`): nothing may stop
  a daemon while they look at every unit;
- phase 2, side by side: the Swift lane (`replication`, `swift_loss`: objects through the proxy, Swift daemons on
  the storage nodes stopped and started), the local-disk lane (`caching`: its guests only in the lab's local-disk
  zone, i.e. the qcow2 compute, whose base-image cache it watches) and the main lane, everything else in the order
  asked (cinder, the RBD computes and their guests, evacuation and live migration, the failover of cinder-volume,
  a user's own files). The Swift suites boot no guest, touch no volume and no compute; no main-lane guest can land
  in the local-disk zone (a boot naming no zone, an evacuation or a migration stays in the default zone); no lane
  stops what another uses. Guests are built in a directory of their own on the controller (guest.py).

A suite's own fixtures stay in its lane; the lab baseline (nothing left behind, every compute serving) is taken by
verify itself before the first phase and after the last, since no lane sees the lab whole.
"""

from __future__ import annotations

from collections.abc import Sequence

HEALTH = ("infra", "storage", "openstack")
SIDE_LANES = {"swift": ("replication", "swift_loss"), "local-disk": ("caching",)}
MAIN = "main"

Lane = tuple[str, list[str]]  # (lane name, suites in order)


def phases(names: Sequence[str]) -> list[list[Lane]]:
    """The suites asked for, as phases run one after the other, each a list of lanes run at once (no empty lane
    or phase; the order asked is kept inside every lane)."""
    first = [n for n in names if n in HEALTH]
    side = {lane: [n for n in names if n in members] for lane, members in SIDE_LANES.items()}
    taken = set(first).union(*side.values())
    main = [n for n in names if n not in taken]
    out: list[list[Lane]] = []
    if first:
        out.append([("health", first)])
    second = [(MAIN, main)] if main else []
    second += [(lane, suites) for lane, suites in side.items() if suites]
    if second:
        out.append(second)
    return out


def is_serial(plan: list[list[Lane]]) -> bool:
    """True when no two lanes run at once (one pytest process can run it all, as before lanes)."""
    return all(len(phase) == 1 for phase in plan)
