"""Does the lab fit this host? Refusals made at plan time, before anything is touched.

- Every lab network's CIDR must be free on the host: overlapping a host route (the uplink's subnet, a VPN,
  another lab's bridge) would route that traffic into the lab's bridge. Routes on this lab's own bridge (same
  kernel name and this lab's ownership mark in its ifalias) are the lab itself, e.g. on a re-plan.
- What the lab asks for must exist: the nodes' memory at most the host's, the node, OSD, LVM, LUN and export
  sizes at most the size of the filesystem that holds the lab's state (sparse files, so the bound is the
  filesystem's size, not its free space: a lab beyond it can never be filled).
- Its container nodes must find the inotify instances they boot with (host/inotify.py).

The judging is pure (`route_problems`, `size_problems`); `check_lab_fits_host` feeds it the host's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stacklab.errors import PlanError
from stacklab.exec.runner import Runner
from stacklab.host.inotify import inotify_problem, inotify_use
from stacklab.host.routes import HostRoute, filesystem_mib, mem_total_mib, read_ifaliases, read_routes
from stacklab.model.lab import Lab
from stacklab.plan.naming import owner_marker


def route_problems(lab: Lab, routes: list[HostRoute], ifaliases: dict[str, str]) -> list[str]:
    problems = []
    for net_name, net in lab.networks.items():
        own_dev = lab.bridge_ifname(net_name)
        ours = ifaliases.get(own_dev) == owner_marker(lab.name, "bridge", net_name)
        for route in routes:
            if not route.dst.overlaps(net.cidr):
                continue
            if ours and route.dev == own_dev:
                continue  # this lab's own bridge, already up
            problems.append(
                f"networks.{net_name}.cidr: {net.cidr} overlaps the host route `{route.text}`: the lab's bridge "
                "would take that traffic (pick a free private range, e.g. another 10.x.y.0/24)"
            )
            break  # one clash per network is enough to act on
    return problems


@dataclass(frozen=True)
class LabNeeds:
    memory_mib: int
    disk_mib: int


def lab_needs(lab: Lab) -> LabNeeds:
    """Memory of all nodes; every size the lab asks to be allocated as files on the host or in its nodes."""
    st = lab.storage
    disk = sum(d.size for node in lab.nodes.values() for d in node.disks)
    if st.lvm and st.lvm.disk is None:  # on a disk of its node, the VG is counted with the node's disks
        disk += st.lvm.size
    if st.iscsi:
        disk += sum(t.size for t in st.iscsi.targets if t.backing == "file")
    if st.nfs:
        disk += sum(e.size or 0 for e in st.nfs.exports)
    if st.ceph:
        disk += sum(o.count * o.size for o in st.ceph.osds)
    return LabNeeds(memory_mib=sum(n.memory for n in lab.nodes.values()), disk_mib=disk)


def _gib(mib: int) -> str:
    return f"{mib / 1024:,.1f} GiB"


def size_problems(needs: LabNeeds, mem_mib: int | None, fs: tuple[Path, int] | None) -> list[str]:
    problems = []
    if mem_mib is not None and needs.memory_mib > mem_mib:
        problems.append(
            f"nodes: the lab's nodes ask for {_gib(needs.memory_mib)} of memory; this host has {_gib(mem_mib)}"
        )
    if fs is not None and needs.disk_mib > fs[1]:
        problems.append(
            f"storage/disks: the lab's disks, OSDs, volumes and exports add up to {_gib(needs.disk_mib)}; the "
            f"filesystem of {fs[0]} holds {_gib(fs[1])} in all"
        )
    return problems


def check_lab_fits_host(lab: Lab, runner: Runner, state_dir: Path) -> None:
    """PlanError listing every way the lab does not fit this host (routes, memory, disk, inotify); None when it
    fits."""
    problems = route_problems(lab, read_routes(runner), read_ifaliases(runner))
    problems += size_problems(lab_needs(lab), mem_total_mib(), filesystem_mib(state_dir))
    # `auto` nodes counted as containers: they are, unless the host's KVM works (then the count errs high)
    containers = sum(1 for node in lab.nodes.values() if node.kind in ("container", "auto"))
    inotify = inotify_problem(inotify_use(skip_cgroup=f"stacklab/{lab.name}-"), containers)
    problems += [inotify] if inotify else []
    if problems:
        raise PlanError(
            f"lab {lab.name} does not fit this host ({lab.source}):\n  " + "\n  ".join(problems),
            hint="nothing was touched; change the lab file",
        )
