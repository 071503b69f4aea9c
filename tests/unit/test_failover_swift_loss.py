"""The `failover` and `swift_loss` suites' verdicts on recorded observations, and the knobs they need
(`openstack.cinder.volume_nodes`, `openstack.swift.devices`): each check fails, naming what broke, when the flow
it proves is broken."""

from __future__ import annotations

from stacklab.drivers.openstack.cinder_volumes import node_conf, other_volume_nodes, volume_nodes
from stacklab.drivers.openstack.common import ServiceLayout, service_layout
from stacklab.drivers.openstack.swift import ring_commands, ring_record
from stacklab.drivers.openstack.swift_devices import device_names, mount_unit, render_mount_unit
from stacklab.model import load_lab_text
from stacklab.plan.expand import expand
from stacklab.suites.test_failover import GIB, Observed, managed_problems, node_of, service_host, stuck_problems
from stacklab.suites.test_swift_loss import (
    Place,
    full_device_problems,
    handback_problems,
    placement_problems,
    proxy_seconds,
)
from tests.unit.lab_util import os_lab

# -- failover: cinder-volume is not HA ---------------------------------------------------------------------------

BEFORE = Observed("available", 1, "infra1@rbd#rbd", GIB, "stacklab-failover:ab12")


def test_a_volume_whose_owner_is_down_and_that_is_not_extended_is_stuck() -> None:
    errored = Observed("error_extending", 1, "infra1@rbd#rbd", GIB, BEFORE.mark)
    noted = Observed("available", 1, "infra1@rbd#rbd", GIB, BEFORE.mark, ["VOLUME_000002: No valid backend"])
    assert stuck_problems(BEFORE, errored, 2) == []
    assert stuck_problems(BEFORE, noted, 2) == []
    assert stuck_problems(BEFORE, Observed("extending", 1, "infra1@rbd#rbd", GIB, BEFORE.mark), 2) == []


def test_an_extend_done_while_the_owner_is_down_fails_naming_another_manager() -> None:
    """What an active-active (or a shared `backend_host`) deployment would show: the premise of the seed broken."""
    extended = Observed("available", 2, "infra1@rbd#rbd", 2 * GIB, BEFORE.mark)
    found = stuck_problems(BEFORE, extended, 2)
    assert any("was extended to 2 GiB" in p and "another service manages it" in p for p in found), found


def test_an_extend_that_left_no_trace_fails() -> None:
    found = stuck_problems(BEFORE, Observed("available", 1, "infra1@rbd#rbd", GIB, BEFORE.mark), 2)
    assert found == ["the extend left no trace: status 'available', no user message (was it asked for at all?)"]


def test_a_volume_moved_without_update_host_fails() -> None:
    moved = Observed("error_extending", 1, "compute2@rbd#rbd", GIB, BEFORE.mark)
    assert any("without update_host" in p for p in stuck_problems(BEFORE, moved, 2))


def test_managed_again_with_its_mark_passes() -> None:
    after = Observed("available", 2, "compute2@rbd", 2 * GIB, BEFORE.mark)
    assert managed_problems(BEFORE, after, "compute2@rbd", 2) == []


def test_update_host_that_moved_nothing_and_a_lost_mark_fail() -> None:
    after = Observed("available", 1, "infra1@rbd#rbd", GIB, "garbage")
    found = managed_problems(BEFORE, after, "compute2@rbd", 2)
    assert any("update_host did not move it" in p for p in found), found
    assert any("did not happen: cinder says 1 GiB" in p for p in found), found
    assert any("the data changed" in p for p in found), found


def test_volume_host_names() -> None:
    assert service_host("compute2@rbd#rbd") == "compute2@rbd" and node_of("compute2@rbd#rbd") == "compute2"


LAB = os_lab(
    "fo",
    """\
nodes:
  ctl1: {image: os, nics: {mgmt: {address: 10.250.0.10}, storage: {address: 10.251.0.10}}, roles: [controller]}
  cmp1: {image: os, nics: {mgmt: {address: 10.250.0.11}, storage: {address: 10.251.0.11}}, roles: [compute]}
  s1: {image: os, nics: {mgmt: {address: 10.250.0.21}, storage: {address: 10.251.0.21}}, roles: [swift]}
  s2: {image: os, nics: {mgmt: {address: 10.250.0.22}, storage: {address: 10.251.0.22}}, roles: [swift]}
storage:
  ceph: {mons: [s1], osds: [{node: s1, count: 1}, {node: s2, count: 1}], replicas: 2, pools: [volumes],
         clients: [cinder]}
openstack:
  services: [mariadb, rabbitmq, memcached, keystone, cinder, swift]
  cinder: {backends: [rbd], volume_nodes: [ctl1, cmp1]}
  swift: {replicas: 2, devices: 2}
verify:
  suites: [failover, swift_loss]
""",
)


def layouts() -> dict[str, ServiceLayout]:
    lab = load_lab_text(LAB, "fo.yml")
    return {r.name: service_layout(r, "fo") for r in expand(lab) if r.kind == "service"}


def test_volume_nodes_reach_the_cinder_spec_with_their_own_my_ip() -> None:
    cinder = layouts()["cinder"]
    assert volume_nodes(cinder) == ["ctl1", "cmp1"] and other_volume_nodes(cinder) == ["cmp1"]
    assert cinder.hosts == ("ctl1", "cmp1")
    assert cinder.addresses == {"ctl1": "10.250.0.10", "cmp1": "10.250.0.11"}
    conf = "[DEFAULT]\nmy_ip = 10.250.0.10\ntransport_url = rabbit://u:p@10.250.0.10:5672/\n"
    assert node_conf(conf, "10.250.0.11") == conf.replace("my_ip = 10.250.0.10", "my_ip = 10.250.0.11")


def test_swift_devices_are_mount_points_in_every_ring_zone() -> None:
    swift = layouts()["swift"]
    assert device_names(swift) == ["d1", "d2"]
    nodes = {"s1": "10.251.0.21", "s2": "10.251.0.22"}
    adds = [c[3] for c in ring_commands(nodes, 2, ["d1", "d2"]) if c[2] == "add" and c[1] == "object.builder"]
    assert adds == ["r1z1-10.251.0.21:6200/d1", "r1z1-10.251.0.21:6200/d2", "r1z2-10.251.0.22:6200/d1",
                    "r1z2-10.251.0.22:6200/d2"]  # fmt: skip
    # a one-device lab keeps the record its rings were built with (no rebuild on upgrade)
    assert '"devices"' not in ring_record(nodes, 2) and '"devices": ["d1", "d2"]' in ring_record(nodes, 2, ["d1", "d2"])
    assert mount_unit("d2") == "srv-node-d2.mount"
    unit = render_mount_unit(swift, "d2", ("64062", "64063"))
    assert "What=tmpfs\nWhere=/srv/node/d2\nType=tmpfs\nOptions=size=512m,mode=0750,uid=64062,gid=64063\n" in unit


# -- swift_loss: handoffs and hand-back --------------------------------------------------------------------------

P = [Place("storage1", "d1", "/srv/node/d1/objects/7/abc/x"), Place("storage2", "d2", "/srv/node/d2/objects/7/abc/x"),
     Place("storage3", "d1", "/srv/node/d1/objects/7/abc/x")]  # fmt: skip
H = [Place("storage3", "d2", "/srv/node/d2/objects/7/abc/x"), Place("storage1", "d2", "/srv/node/d2/objects/7/abc/x")]


def test_a_lost_nodes_replica_on_the_first_handoff_outside_it_passes() -> None:
    # storage3 lost: its other device is no handoff for it; the next one (storage1:d2) took the write
    holding = {P[0]: True, P[1]: True, P[2]: False, H[0]: False, H[1]: True}
    assert placement_problems(P, H, holding, "storage3") == []
    # one device lost: the same node's other device is a fine handoff
    holding = {P[0]: True, P[1]: True, P[2]: False, H[0]: True, H[1]: False}
    assert placement_problems(P, H, holding, "storage3:d1") == []


def test_a_write_that_went_nowhere_fails() -> None:
    """Two replicas where three were acknowledged: no handoff took the lost one."""
    holding = {P[0]: True, P[1]: True, P[2]: False, H[0]: False, H[1]: False}
    found = placement_problems(P, H, holding, "storage3")
    assert found == ["the first handoff storage1:d2 has no replica (handoffs holding it: none): the lost replica went "
                     "nowhere"]  # fmt: skip


def test_a_missing_surviving_replica_or_a_write_on_the_lost_device_fails() -> None:
    holding = {P[0]: False, P[1]: True, P[2]: True, H[0]: True}
    found = placement_problems(P, H, holding, "storage3:d1")
    assert any("surviving primary storage1:d1 has no replica" in p for p in found), found
    assert any("storage3:d1 holds the object although it was lost" in p for p in found), found


def test_no_handoff_outside_the_lost_node_is_named() -> None:
    found = placement_problems(P, [H[0]], {P[0]: True, P[1]: True}, "storage3")
    assert found == ["the ring names no handoff outside storage3: give the lab more devices than replicas"]


def test_hand_back() -> None:
    assert handback_problems(P[2], H[1], "sha", None, "sha") == []
    found = handback_problems(P[2], H[1], None, "sha", "sha")
    assert found == [
        "storage3:d1 has no replica, not the object sha",
        f"the handoff storage1:d2 still holds its copy in {H[1].directory}",
    ]


def test_a_full_device_that_refused_the_write_passes() -> None:
    recon = {"device": "d1", "mounted": True, "size": 1048576, "used": 1048576, "avail": 0}
    assert full_device_problems(["507"], recon, [], "storage1:d1") == []


def test_a_full_device_that_took_the_write_or_was_not_full_fails() -> None:
    roomy = {"device": "d1", "mounted": True, "size": 536870912, "used": 0, "avail": 536870912}
    found = full_device_problems(["201"], roomy, ["/srv/node/d1/objects/7/abc/x/1.data"], "storage1:d1")
    assert found == [
        "storage1:d1's object server answered the PUT ['201'], not 507",
        f"recon/diskusage does not show storage1:d1 full: {roomy}",
        "the full device holds files of the object: ['/srv/node/d1/objects/7/abc/x/1.data']",
    ]
    assert full_device_problems([], None, [], "storage1:d1") == [
        "storage1:d1's object server answered the PUT never (no request logged), not 507",
        "recon/diskusage does not list storage1:d1",
    ]


def test_the_proxy_s_own_time_is_read_from_its_request_log() -> None:
    from stacklab.exec.fake import FakeRunner

    line = (
        "10.0.0.4 10.0.0.4 06/Dec/2026/20/20/34 PUT /v1/AUTH_a/c/full-1 HTTP/1.0 201 - Python-urllib/3.11 gAAA... "
        "65536 - - tx2888fc909da8443b9346e-006b15c392 - 0.5634 - - 1796588434.109 1796588434.672 0\n"
    )
    runner = FakeRunner().expect(["journalctl", "-u", "swift-proxy"], stdout=line)
    assert proxy_seconds(runner, 1796588430.0, "/v1/AUTH_a/c/full-1") == "0.5634s"
    assert proxy_seconds(runner, 1796588430.0, "/v1/AUTH_a/c/other") == "?"


def test_measured_figures_are_printed_under_their_suite() -> None:
    from stacklab.suites.report import Case, render_table, summarize

    cases = [
        Case("failover", "test_x", "passed", 90.0, evidence=(("volume", "v1"), ("measured: failover", "managed 12s"))),
        Case("swift_loss", "test_y", "passed", 30.0),
    ]
    lines = render_table(summarize(cases)).splitlines()
    assert lines[2].strip() == "measured failover: managed 12s" and lines[1].startswith("failover")
    assert not any("volume" in line for line in lines)
