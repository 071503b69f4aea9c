"""The suites' proofs on recorded outputs: each one fails when the flow it proves is broken.

`attach`: the volume's I/O is the instance's QEMU process talking to the OSDs from the compute's storage address
(the proxy it replaces, "the storage NIC's rx counter grew", held with Ceph's background traffic alone).
`lab_baseline`: whatever the suites leave behind, and any compute that does not serve, is named.
"""

from __future__ import annotations

from typing import Any

from stacklab.suites.guest import host_of, pid_connections, volume_flow_problems
from stacklab.suites.lab_baseline import leftovers

OSDS = {"172.29.244.21:6800", "172.29.244.21:6801", "172.29.244.22:6800", "172.29.244.22:6801", "172.29.244.23:6800"}
STORAGE_IP = "172.29.244.11"
QEMU = 'users:(("qemu-system-x86",pid=4242,fd={fd}))'
# `ss -tnpH state established` on compute1 before the attach: the root disk's librados client, ceph-crash, sshd
BEFORE = f"""0 0 172.29.244.11:40100 172.29.244.21:3300 {QEMU.format(fd=30)}
0 0 172.29.244.11:40102 172.29.244.22:6800 {QEMU.format(fd=31)}
0 0 172.29.244.11:40990 172.29.244.23:6800 users:(("ceph-crash",pid=900,fd=5))
0 0 172.29.236.11:22 172.29.236.1:51234 users:(("sshd",pid=1200,fd=4))
"""
# after: the volume's own librados client (a new monitor session and new OSD connections of the same QEMU)
AFTER_GOOD = (
    BEFORE
    + f"""0 0 172.29.244.11:40200 172.29.244.23:3300 {QEMU.format(fd=40)}
0 0 172.29.244.11:40202 172.29.244.21:6800 {QEMU.format(fd=41)}
0 0 172.29.244.11:40204 172.29.244.23:6800 {QEMU.format(fd=42)}
"""
)
WATCHERS = ["172.29.244.11:0/3527611712"]


def problems(after: str = AFTER_GOOD, watchers: list[str] | None = None, pid: str = "4242") -> list[str]:
    return volume_flow_problems(BEFORE, after, pid=pid, osds=OSDS, storage_ip=STORAGE_IP,
                                watchers=WATCHERS if watchers is None else watchers)  # fmt: skip


def test_the_volume_carried_by_the_instances_qemu_over_the_storage_network_passes() -> None:
    assert problems() == []
    assert pid_connections(AFTER_GOOD, "4242") >= {("172.29.244.11:40202", "172.29.244.21:6800")}
    assert host_of("v2:172.29.244.11:0/123") == host_of("172.29.244.11:6800") == "172.29.244.11"


def test_ceph_background_traffic_alone_does_not_pass() -> None:
    """What fooled the rx counter: the cluster talks to the compute (ceph-crash, OSD heartbeats) while QEMU opened
    nothing for the volume and nobody has the image open."""
    busy = BEFORE + '0 0 172.29.244.11:41000 172.29.244.21:6800 users:(("ceph-crash",pid=900,fd=6))\n'
    found = problems(after=busy, watchers=[])
    assert any("opened no connection to an OSD" in p for p in found), found
    assert any("watched by nobody" in p for p in found), found


def test_the_root_disks_old_connections_do_not_count_for_the_volume() -> None:
    assert any("opened no connection" in p for p in problems(after=BEFORE))


def test_a_volume_reached_over_the_management_network_fails() -> None:
    over_mgmt = BEFORE + f"0 0 172.29.236.11:40300 172.29.244.21:6800 {QEMU.format(fd=50)}\n"
    found = problems(after=over_mgmt, watchers=["172.29.236.11:0/99"])
    assert any("do not leave from the storage address" in p for p in found), found
    assert any("expected one client at 172.29.244.11" in p for p in found), found


def test_another_process_or_another_client_of_the_image_fails() -> None:
    assert any("opened no connection" in p for p in problems(pid="5555"))
    found = problems(watchers=[*WATCHERS, "172.29.244.12:0/77"])
    assert any("expected one client" in p for p in found), found


def test_connections_to_non_osd_peers_are_no_proof() -> None:
    to_monitor_only = BEFORE + f"0 0 172.29.244.11:40200 172.29.244.23:3300 {QEMU.format(fd=40)}\n"
    assert any("opened no connection to an OSD" in p for p in problems(after=to_monitor_only))


BEFORE_INVENTORY: dict[str, Any] = {
    "servers": [],
    "volumes": ["old-volume 1111"],
    "snapshots": [],
    "images": ["cirros aaaa"],
    "projects": ["admin p1", "service p2"],
    "users": ["admin u1", "nova u2"],
    "computes": [
        {"host": "compute1", "state": "up", "status": "enabled", "forced_down": False},
        {"host": "compute2", "state": "up", "status": "enabled", "forced_down": False},
    ],
}


def test_baseline_passes_when_the_lab_is_as_before() -> None:
    assert leftovers(BEFORE_INVENTORY, BEFORE_INVENTORY, ["compute1", "compute2"]) == []


def test_baseline_names_what_the_suites_left() -> None:
    after = {
        **BEFORE_INVENTORY,
        "servers": ["stacklab-suite-attach 2222"],
        "volumes": ["old-volume 1111", "stacklab-suite-attach 3333"],
        "snapshots": ["s 4444"],
        "images": ["cirros aaaa", "stacklab-guest bbbb"],
        "projects": [*BEFORE_INVENTORY["projects"], "tempest-x p3"],
        "users": [*BEFORE_INVENTORY["users"], "tempest-y u3"],
        "computes": [
            {"host": "compute1", "state": "up", "status": "enabled", "forced_down": False},
            {"host": "compute2", "state": "down", "status": "enabled", "forced_down": True},
        ],
    }
    found = leftovers(BEFORE_INVENTORY, after, ["compute1", "compute2"])
    assert found[:6] == ["server stacklab-suite-attach 2222", "volume stacklab-suite-attach 3333",
                         "snapshot s 4444", "image stacklab-guest bbbb", "project tempest-x p3",
                         "user tempest-y u3"]  # fmt: skip
    assert len(found) == 7 and found[6].startswith("compute compute2:") and "forced_down': True" in found[6]


def test_baseline_wants_every_compute_even_one_nova_forgot() -> None:
    after = {**BEFORE_INVENTORY, "computes": BEFORE_INVENTORY["computes"][:1]}
    assert leftovers(BEFORE_INVENTORY, after, ["compute1", "compute2"]) == [
        "compute compute2: no nova-compute service (expected up, enabled, not forced down)"
    ]
