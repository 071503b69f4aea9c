"""The `migration` suite's checks and nova's live-migration files, without a lab.

The checks are fed what a broken migration looks like on a lab (answers and log lines recorded there), so the
suite's messages are shown to say what broke, in words a person understands.
"""

from __future__ import annotations

import stat
from pathlib import Path

from stacklab.drivers.openstack import nova_migration
from stacklab.model import LabError, load_lab_text
from stacklab.suites.test_migration import (
    AFTER_BEATS,
    Beat,
    beat_problems,
    kernel_faults,
    migration_problems,
    parse_beats,
    parse_sockets,
    stream_problems,
)

BOOT = "5c0ffee0-1111-2222-3333-444455556666"


def beats(node: str, first: int, count: int, start: float, *, boot: str = BOOT) -> list[Beat]:
    """`count` beats every 0.2 s (the suite's BEAT) from `start`, counting from `first`."""
    return [Beat(start + i * 0.2, boot, first + i, node) for i in range(count)]


def test_parse_beats_reads_the_watcher_lines_only() -> None:
    text = (
        f"1700000000.100 stacklab-beat {BOOT} 7\n"
        "1700000000.150 stacklab-guest: disk kept stacklab-disk:x\n"
        f"1700000000.300 stacklab-beat {BOOT} 8\r\n"
        f"1700000000.350 stacklab-beat {BOOT}\n"
    )
    assert parse_beats(text, "compute1") == [
        Beat(1700000000.1, BOOT, 7, "compute1"),
        Beat(1700000000.3, BOOT, 8, "compute1"),
    ]


def test_a_guest_that_went_on_running_passes_with_its_pause() -> None:
    seen = beats("compute1", 1, 20, 100.0) + beats("compute2", 21, AFTER_BEATS, 104.0 + 1.25)
    problems, pause = beat_problems(seen, boot=BOOT, source="compute1", dest="compute2", bound=10.0)
    assert problems == []
    assert pause.last is not None and pause.first is not None
    assert (pause.last.n, pause.first.n, pause.seconds) == (20, 21, 1.45)


def test_a_line_cut_by_the_switch_over_is_allowed() -> None:
    seen = beats("compute1", 1, 20, 100.0) + beats("compute2", 22, AFTER_BEATS, 105.0)
    assert beat_problems(seen, boot=BOOT, source="compute1", dest="compute2", bound=10.0)[0] == []


def test_a_rebooted_guest_fails() -> None:
    # what an evacuation (or a cold migration) looks like: a new boot on the destination, counting from 1
    seen = beats("compute1", 1, 20, 100.0) + beats("compute2", 1, AFTER_BEATS, 130.0, boot="new-boot-id")
    problems, _ = beat_problems(seen, boot=BOOT, source="compute1", dest="compute2", bound=10.0)
    assert problems == [
        "the guest booted again: boot id 5c0ffee0-1111-2222-3333-444455556666 before, new-boot-id on compute2",
        "the heartbeat counted again from 1 on compute2 after 20 on compute1: a new guest, not the migrated one",
        "the guest was silent for 26.2s (bound 10s): beat 20 on compute1, then beat 1 on compute2",
    ]


def test_a_long_pause_and_lost_lines_fail() -> None:
    seen = beats("compute1", 1, 20, 100.0) + beats("compute2", 40, AFTER_BEATS, 120.0)
    problems, pause = beat_problems(seen, boot=BOOT, source="compute1", dest="compute2", bound=10.0)
    assert pause.seconds == 16.2
    assert problems == [
        "the heartbeat jumped from 20 on compute1 to 40 on compute2: console lines were lost",
        "the guest was silent for 16.2s (bound 10s): beat 20 on compute1, then beat 40 on compute2",
    ]


def test_a_guest_that_never_arrives_fails() -> None:
    problems, _ = beat_problems(beats("compute1", 1, 20, 100.0), boot=BOOT, source="compute1", dest="compute2",
                                bound=10.0)  # fmt: skip
    assert problems == [
        "the guest never wrote its heartbeat on compute2: it does not run there (or its console log is not where "
        "nova put it)"
    ]


def test_a_guest_that_stops_after_arriving_fails() -> None:
    seen = beats("compute1", 1, 20, 100.0) + beats("compute2", 21, 3, 105.0)
    problems, _ = beat_problems(seen, boot=BOOT, source="compute1", dest="compute2", bound=10.0)
    assert problems == ["the guest stopped on compute2 after 3 beats"]


# What the suite saw on a lab whose computes no longer admitted each other (nova's authorized_keys, which
# nova_migration writes, moved away on both computes; `status` showed it as drift and `up` put it back): nova's
# answer as migration_calls.py gave it and the source's nova-compute log lines the check keeps.
BROKEN_ANSWER = {
    "server_id": "eec1bf35-5ba8-47b6-b1ec-8a71f961dac2",
    "http": 202,
    "answer": {},
    "migration": {"id": 5, "status": "failed", "source_compute": "compute2", "dest_compute": "compute1"},
    "server": {"status": "ACTIVE", "host": "compute2", "task_state": None, "fault": None},
    "seconds": 6.7,
}
BROKEN_LOG = (
    "2026-12-06 16:59:05.101 1078 INFO nova.compute.manager [-] [instance: eec1bf35-5ba8-47b6-b1ec-8a71f961dac2] "
    "Took 0.02 seconds to ...\n"
    "2026-12-06 16:59:11.567 1078 ERROR nova.virt.libvirt.driver [-] [instance: eec1bf35-5ba8-47b6-b1ec-8a71f961dac2] "
    "Live Migration failure: Cannot recv data: nova@10.118.229.11: Permission denied (publickey).: Connection reset "
    "by peer: libvirt.libvirtError: Cannot recv data: nova@10.118.229.11: Permission denied (publickey).: Connection "
    "reset by peer\n"
    "2026-12-06 16:59:12.195 1078 ERROR nova.virt.libvirt.driver [-] [instance: eec1bf35-5ba8-47b6-b1ec-8a71f961dac2] "
    "Migration operation has aborted\n"
)


def test_a_kernel_fault_on_the_destination_is_found_after_the_migration_only() -> None:
    # the nova-nfs lab's nested TCG guest after its live migration (qemu64 CPU): an oops in a `sleep` the beat loop
    # started; the guest beat on, but a GS-relative per-CPU read had returned 0
    watched = "\n".join([
        "100.00 stacklab-beat b1 40",
        "100.50 [  601.1] BUG: kernel NULL pointer dereference, address: 0000000000000054",  # read before: not it
        "200.10 [  615.839915] BUG: kernel NULL pointer dereference, address: 0000000000000054",
        "200.11 [  615.983548] Oops: 0000 [#1] PREEMPT SMP NOPTI",
        "200.12 [  616.026945] RIP: 0010:tomoyo_bprm_committed_creds+0x20/0x40",
        "200.20 stacklab-beat b1 55",
        "200.30 socket LISTEN 10.0.0.12:49152",
    ])  # fmt: skip
    assert kernel_faults(watched, since=100.5) == [
        "[  615.839915] BUG: kernel NULL pointer dereference, address: 0000000000000054",
        "[  615.983548] Oops: 0000 [#1] PREEMPT SMP NOPTI",
    ]
    assert kernel_faults("200.20 stacklab-beat b1 55\n", since=0.0) == []


def test_a_migration_libvirt_cannot_make_says_why() -> None:
    problems = migration_problems(BROKEN_ANSWER, "compute2", BROKEN_LOG)
    assert len(problems) == 2
    assert problems[0].startswith("the live migration from compute2 to compute1 ended failed after 6.7s; nova-compute "
                                  "on compute2 logged: ")  # fmt: skip
    assert "nova@10.118.229.11: Permission denied (publickey)" in problems[0]
    assert problems[0].endswith("Migration operation has aborted") and "Took 0.02" not in problems[0]
    assert problems[1] == "the server is ACTIVE on compute2 (task None), not ACTIVE off compute2"


def test_a_refused_request_says_so() -> None:
    answer = {"http": 400, "answer": {"badRequest": {"message": "No valid host was found."}}}
    assert migration_problems(answer, "compute1") == [
        "nova refused the live migration off compute1: HTTP 400: "
        "{'badRequest': {'message': 'No valid host was found.'}}"
    ]


def test_a_completed_migration_passes() -> None:
    done = {**BROKEN_ANSWER, "migration": {"status": "completed", "dest_compute": "compute1"},
            "server": {"status": "ACTIVE", "host": "compute1"}}  # fmt: skip
    assert migration_problems(done, "compute2", BROKEN_LOG) == []


# The destination's watcher during a migration on the lab (compute1 10.118.229.11, the source 10.118.229.12), and
# an ssh client of the node whose ephemeral port happened to fall in the range (not a migration socket).
WATCHED = (
    "1765040851.204 stacklab-beat f40b0b75 114\n"
    "1765040852.101 socket LISTEN 10.118.229.11:49152\n"
    "1765040853.377 socket ESTAB 10.118.229.11:49152 10.118.229.12:51056\n"
    "1765040853.377 socket ESTAB 10.118.229.11:49158 10.118.229.1:22\n"
)


def stream(text: str) -> tuple[list[str], str]:
    return stream_problems(parse_sockets(text), dest="compute1", dest_ip="10.118.229.11", source_ip="10.118.229.12",
                           ports=[49152, 49161])  # fmt: skip


def test_the_stream_came_in_on_the_mgmt_address_from_the_source() -> None:
    assert parse_sockets(WATCHED)[0] == ("LISTEN", "10.118.229.11:49152", "")
    assert stream(WATCHED) == ([], "listen 10.118.229.11:49152, 10.118.229.11:49152 <- 10.118.229.12:51056, "
                                   "10.118.229.11:49158 <- 10.118.229.1:22")  # fmt: skip


def test_a_stream_listening_everywhere_fails() -> None:
    # libvirt's default without qemu.conf's migration_address: QEMU listens on every address
    text = WATCHED.replace("socket LISTEN 10.118.229.11:49152", "socket LISTEN 0.0.0.0:49152")
    assert stream(text)[0] == [
        "QEMU on compute1 listened for the migration on 0.0.0.0:49152, not on its br-mgmt address 10.118.229.11 only"
    ]


def test_a_stream_from_elsewhere_or_nowhere_fails() -> None:
    # over br-storage: the source's storage address connected (nova's inbound address set to the storage network)
    text = WATCHED.replace("10.118.229.12:51056", "10.158.157.12:51056")
    assert stream(text)[0][0].startswith("no migration stream into 10.118.229.11 from the source's br-mgmt address "
                                         "10.118.229.12 on ports 49152-49161; seen: listen")  # fmt: skip
    assert stream("1765040851.204 stacklab-beat f40b0b75 114\n")[0] == [
        "no socket on compute1's migration ports 49152-49161 during the migration: QEMU's memory did not come in "
        "where libvirt's qemu.conf says"
    ]


# -- nova's live-migration files -----------------------------------------------------------------------------


def test_the_destination_admits_the_lab_key_from_the_other_computes_only() -> None:
    text = nova_migration.render_authorized_keys("lab1", "ssh-ed25519 AAAAKEY stacklab", ["10.0.0.12", "10.0.0.13"])
    line = text.splitlines()[-1]
    assert line == (
        'from="10.0.0.12,10.0.0.13",restrict,command="/usr/bin/virt-ssh-helper qemu:///system" '
        "ssh-ed25519 AAAAKEY stacklab"
    )
    assert nova_migration.render_authorized_keys("lab1", "ssh-ed25519 AAAAKEY", []).count("ssh-ed25519") == 0


def test_the_source_checks_the_pinned_host_keys() -> None:
    conf = nova_migration.render_ssh_client_conf("lab1", ["10.0.0.12"])
    assert "Host 10.0.0.12\n" in conf and "    StrictHostKeyChecking yes\n" in conf
    assert f"    UserKnownHostsFile {nova_migration.KNOWN_HOSTS}\n" in conf and "    User nova\n" in conf
    known = nova_migration.render_known_hosts({"10.0.0.12": "ssh-ed25519 AAAAHOST root@compute2\n"})
    assert known == "10.0.0.12 ssh-ed25519 AAAAHOST\n"


def test_libvirt_and_nova_use_the_mgmt_address() -> None:
    qemu = nova_migration.render_qemu_conf("lab1", "10.0.0.11")
    assert 'migration_address = "10.0.0.11"\n' in qemu and "migration_port_min = 49152\n" in qemu
    assert 'host_uuid_source = "machine-id"' in nova_migration.render_libvirtd_conf("lab1")
    assert nova_migration.nova_conf_lines("10.0.0.11") == (
        "live_migration_scheme = ssh\nlive_migration_inbound_addr = 10.0.0.11\n"
    )


def test_the_lab_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    assert nova_migration.lab_key(tmp_path, create=False) is None
    made = nova_migration.lab_key(tmp_path, create=True)
    assert made is not None
    private, public = made
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and public.startswith("ssh-ed25519 ")
    assert nova_migration.lab_key(tmp_path, create=True) == made
    mode = (tmp_path / "secrets" / nova_migration.KEY_SECRET).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


# -- validate: a lab that lists the suite must be able to run it -----------------------------------------------

CONTROL_PLANE = Path(__file__).resolve().parents[2] / "labs" / "control-plane.yml"


def migration_issues(text: str) -> list[tuple[str, str | None]]:
    try:
        load_lab_text(text, "lab.yml", base_dir=CONTROL_PLANE.parent)
    except LabError as raised:
        return [(i.message, i.hint) for i in raised.issues if "live migration" in i.message]
    return []


def test_the_shipped_ci_lab_can_run_the_suite() -> None:
    text = CONTROL_PLANE.read_text()
    assert "migration" in text.rsplit("suites:", 1)[-1] and migration_issues(text) == []


def test_validate_refuses_the_suite_without_two_rbd_computes() -> None:
    # compute2's disks local: only compute1 keeps its instance disks on RBD in nova's default zone
    text = CONTROL_PLANE.read_text().replace(
        "    overrides:\n", "    overrides:\n      compute2: {images_type: qcow2}\n", 1
    )
    assert migration_issues(text) == [
        (
            "live migration needs two compute nodes with instance disks on RBD in zone nova",
            "set openstack.nova.images_type: rbd (with storage.ceph) and give the lab a second compute",
        )
    ]


def test_the_watcher_reads_proc_net_tcp_addresses() -> None:
    from stacklab.suites import beat_watch

    # /proc/net/tcp: the IPv4 address as a little-endian word, the port big-endian
    assert beat_watch.address("0B0AA8C0:C000") == "192.168.10.11:49152"
