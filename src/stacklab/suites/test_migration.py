"""Suite `migration`: live migration for maintenance on shared storage (the instance disks on RBD, or with nova's
instances_on nfs qcow2 files on one NFS export every compute mounts: instance_disks.py).

The seed: a shared storage subsystem "allows quick, live instance migration between Compute hosts, which is useful
when the administrator needs to perform maintenance on the Compute host and wants to evacuate it".

The suites' guest boots with a console heartbeat (`stacklab-beat <boot id> <n>` every BEAT seconds, see
guest_initrd.py). On both computes a watcher (beat_watch.py, a transient unit) stamps each line libvirt writes to
the instance's console log there. The guest is live-migrated through nova's API to the other compute: the
migration must end `completed` with the server ACTIVE there, the heartbeat must go on on the destination with the
same boot id and the next counts (the same running guest, not a new boot), and the silence between the last beat
on the source and the first on the destination (the pause a user sees) must stay under PAUSE_BOUND. Its root disk,
read from Ceph (or on the NFS server, where the disk file keeps its inode: no block migration, and both computes
show the export mounted from the server's br-storage address), still carries the line it wrote at boot (same mark,
same boot id: nothing rebooted). The
destination's sshd shows the source's libvirtd came in as `nova` with the lab's migration key from the source's
br-mgmt address; the watcher on the destination saw QEMU listen for the memory on its br-mgmt address only, on a
port of libvirt's migration range, and the source's br-mgmt address connected there. libvirt's own downtime figure
is recorded beside the measured pause.

Then the maintenance: the compute the guest now runs on is disabled in nova (with a reason) and emptied as `nova
host-evacuate-live` does (a live migration, scheduler's choice, of every server nova places on it); nova then
places no server there, libvirt there has none of them, the guest's heartbeat goes on elsewhere, and the compute is
enabled again (also when a step fails).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest

from stacklab.exec.node_files import write_node_file
from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.guest import guest_image, instance, nested_timeout
from stacklab.suites.instance_disks import InstanceDisks, shared_nova_lab
from stacklab.suites.lab_fixtures import Evidence
from stacklab.suites.openstack_calls import OS_CLIENT
from stacklab.suites.storage_paths import SCRATCH

# on VM computes the guests run under nested TCG: minutes per boot (guest.NESTED_CASE_TIMEOUT)
pytestmark = nested_timeout(900)

BEAT = 0.2  # seconds between the guest's heartbeat lines
# The longest silence of the guest a live migration may cause. Measured on the CI host (TCG, 2 shared cores, a 128
# MiB guest): see the README's migration row; the bound leaves room for a loaded host.
PAUSE_BOUND = 10.0
AFTER_BEATS = 10  # beats the destination must show after the migration ended: the guest goes on running there
CALLS = f"{SCRATCH}/migration_calls.py"  # beside os_client.py, whose login and HTTP helpers it imports
WATCHER = f"{SCRATCH}/beat_watch.py"
NOVA_LOG = "/var/log/nova/nova-compute.log"
MAINTENANCE = "stacklab migration suite: maintenance"
BEAT_LINE = re.compile(r"^(?P<at>\d+\.\d+) stacklab-beat (?P<boot>\S+) (?P<n>\d+)$")
FAILURE_LINE = re.compile(r"Live Migration failure|libvirtError|Migration operation has aborted|ERROR nova")


# -- checks (pure: tests/unit/test_migration_checks.py feeds them what a broken migration looks like) ------------


@dataclass(frozen=True)
class Beat:
    at: float  # wall clock seconds when the watcher read the line on `node`
    boot: str
    n: int
    node: str


def parse_beats(text: str, node: str) -> list[Beat]:
    """The heartbeat lines of a watcher's output on `node` (other console lines are skipped)."""
    found = (BEAT_LINE.match(line.strip()) for line in text.splitlines())
    return [Beat(float(m["at"]), m["boot"], int(m["n"]), node) for m in found if m]


# A kernel fault on the guest's console: the guest may go on beating (an oops in a process's context kills only that
# process), but it did not come through the migration intact.
KERNEL_FAULT = re.compile(r"BUG: |Oops: |Kernel panic|general protection fault|kernel BUG at")


def kernel_faults(text: str, since: float) -> list[str]:
    """The kernel fault lines of a watcher's output read after `since` (its own clock), without their stamps."""
    found = []
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        try:
            at = float(stamp)
        except ValueError:
            continue
        if at > since and KERNEL_FAULT.search(rest):
            found.append(rest.strip())
    return found


def attribute_shared(beats: Sequence[Beat], *, source: str, before: int) -> list[Beat]:
    """The beats by the compute whose QEMU wrote them, when the console log is one file on a shared instances_path
    (instances_on nfs): every compute's watcher then reads the same console.log, the writer's at once (its own NFS
    client's page cache) and another only once its client flushed and revalidated the file (seconds later). Beats
    up to `before` (the last one the source's watcher had read before the migration started) are the source's;
    each later one is kept where it was read first."""
    first: dict[tuple[str, int], Beat] = {}
    for beat in beats:
        if beat.n <= before and beat.node != source:
            continue
        key = (beat.boot, beat.n)
        if key not in first or beat.at < first[key].at:
            first[key] = beat
    return sorted(first.values(), key=lambda b: (b.at, b.n))


@dataclass(frozen=True)
class Pause:
    seconds: float  # from the last beat read on the source to the first beat read on the destination
    last: Beat | None
    first: Beat | None


def beat_problems(beats: Sequence[Beat], *, boot: str, source: str, dest: str, bound: float) -> tuple[list[str], Pause]:
    """What is wrong with "the guest that booted as `boot` ran on `source`, then went on running on `dest`, silent
    for at most `bound` seconds" (empty: nothing), and the pause measured."""
    on_source = sorted((b for b in beats if b.node == source), key=lambda b: b.n)
    on_dest = sorted((b for b in beats if b.node == dest), key=lambda b: b.n)
    last, first = (on_source[-1] if on_source else None), (on_dest[0] if on_dest else None)
    pause = Pause(round(first.at - last.at, 3) if first and last else -1.0, last, first)
    problems = []
    if last is None:
        problems.append(f"the guest wrote no heartbeat to its console log on {source} before the migration")
    if first is None:
        problems.append(f"the guest never wrote its heartbeat on {dest}: it does not run there (or its console log "
                        "is not where nova put it)")  # fmt: skip
    other = sorted({b.boot for b in beats} - {boot})
    if other:
        problems.append(f"the guest booted again: boot id {boot} before, {', '.join(other)} on "
                        f"{', '.join(sorted({b.node for b in beats if b.boot != boot}))}")  # fmt: skip
    if last and first:
        if first.n <= last.n:
            problems.append(f"the heartbeat counted again from {first.n} on {dest} after {last.n} on {source}: a "
                            "new guest, not the migrated one")  # fmt: skip
        elif first.n > last.n + 2:  # a line cut by the switch-over is lost; more is not
            problems.append(f"the heartbeat jumped from {last.n} on {source} to {first.n} on {dest}: console lines "
                            "were lost")  # fmt: skip
        if pause.seconds > bound:
            problems.append(f"the guest was silent for {pause.seconds:.1f}s (bound {bound:g}s): beat {last.n} on "
                            f"{source}, then beat {first.n} on {dest}")  # fmt: skip
    if first and len(on_dest) < AFTER_BEATS:
        problems.append(f"the guest stopped on {dest} after {len(on_dest)} beats")
    return problems, pause


def migration_problems(answer: Mapping[str, Any], source: str, log: str = "") -> list[str]:
    """What is wrong with "nova live-migrated the server off `source`" from a live-migrate answer of
    migration_calls.py (empty: nothing); `log` is the source's nova-compute log since the request, whose failure
    lines say why (libvirt unreachable, host key refused...)."""
    http, migration, server = answer.get("http"), answer.get("migration") or {}, answer.get("server") or {}
    if http != 202:
        return [f"nova refused the live migration off {source}: HTTP {http}: {answer.get('answer')}"]
    problems = []
    if migration.get("status") != "completed":
        why = [line.strip()[-400:] for line in log.splitlines() if FAILURE_LINE.search(line)][-3:]
        problems.append(
            f"the live migration from {source} to {migration.get('dest_compute') or 'no host'} ended "
            f"{migration.get('status') or 'nowhere (no migration record)'} after {answer.get('seconds')}s"
            + (f"; nova-compute on {source} logged: {' | '.join(why)}" if why else "")
        )
    if server.get("status") != "ACTIVE" or server.get("host") in (None, source):
        problems.append(f"the server is {server.get('status')} on {server.get('host')} (task "
                        f"{server.get('task_state')}), not ACTIVE off {source}")  # fmt: skip
    return problems


def parse_sockets(text: str) -> list[tuple[str, str, str]]:
    """(state, local, peer) of a watcher's `socket` lines (peer empty for LISTEN)."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 4 and words[1] == "socket":
            found.append((words[2], words[3], words[4] if len(words) > 4 else ""))
    return found


def _ip(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0]


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def stream_problems(
    sockets: Sequence[tuple[str, str, str]], *, dest: str, dest_ip: str, source_ip: str, ports: Sequence[int]
) -> tuple[list[str], str]:
    """What is wrong with "QEMU's migration stream came into `dest` on its br-mgmt address `dest_ip`, on a port of
    libvirt's range, from the source's br-mgmt address" (empty: nothing), from the sockets the watcher saw on
    `dest` during the migration; and the stream as seen (for the evidence)."""
    span = range(ports[0], ports[1] + 1)
    listening = sorted({local for state, local, _ in sockets if state == "LISTEN" and _port(local) in span})
    streams = sorted({(local, peer) for state, local, peer in sockets if state == "ESTAB" and _port(local) in span})
    seen = ", ".join([*(f"listen {a}" for a in listening), *(f"{a} <- {b}" for a, b in streams)]) or "nothing"
    if not listening and not streams:
        return [f"no socket on {dest}'s migration ports {ports[0]}-{ports[1]} during the migration: QEMU's memory "
                "did not come in where libvirt's qemu.conf says"], seen  # fmt: skip
    problems = []
    wrong = [a for a in listening if _ip(a) != dest_ip]
    if wrong:
        problems.append(f"QEMU on {dest} listened for the migration on {', '.join(wrong)}, not on its br-mgmt "
                        f"address {dest_ip} only")  # fmt: skip
    if not any(_ip(local) == dest_ip and _ip(peer) == source_ip for local, peer in streams):
        problems.append(f"no migration stream into {dest_ip} from the source's br-mgmt address {source_ip} on "
                        f"ports {ports[0]}-{ports[1]}; seen: {seen}")  # fmt: skip
    return problems, seen


# -- the lab --------------------------------------------------------------------------------------------------


def calls(runner: Runner, action: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """Run migration_calls.py ACTION on the node (the controller), the request on stdin."""
    for path, name in ((OS_CLIENT, "os_client.py"), (CALLS, "migration_calls.py")):
        write_node_file(runner, path, resources.files("stacklab.suites").joinpath(name).read_text())
    result = runner.run(["python3", CALLS, action], input=json.dumps(request), timeout=900, check=False)
    assert result.ok, f"migration_calls {action} failed: {result.stderr[-1500:]}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def console_log(runner: Runner, server_id: str) -> str:
    """Where libvirt writes the instance's serial console on its compute (from the domain's XML)."""
    xml = runner.run(["virsh", "dumpxml", server_id], timeout=60).stdout
    found = re.search(r"<log file='([^']+)'", xml) or re.search(r"<source path='([^']+console[^']*)'", xml)
    assert found, f"the domain of {server_id} has no console log file in its XML"
    return found.group(1)


@contextmanager
def watching(
    runners: Mapping[str, Runner], nodes: Sequence[str], log: str, tag: str, ports: Sequence[int]
) -> Iterator[dict[str, str]]:
    """beat_watch.py on each node, following `log` and the sockets of the migration `ports` (a transient unit
    each); yields {node: its output file} and stops the units afterwards."""
    unit, out = f"stacklab-beats-{tag}", f"{SCRATCH}/beats-{tag}.log"
    text = resources.files("stacklab.suites").joinpath("beat_watch.py").read_text()
    for node in nodes:
        write_node_file(runners[node], WATCHER, text)
        runners[node].run(["rm", "-f", out], timeout=30)
        runners[node].run(["systemd-run", "--quiet", f"--unit={unit}", "--collect", "python3", WATCHER, log, out,
                           str(ports[0]), str(ports[1])],
                          timeout=60)  # fmt: skip
    try:
        yield dict.fromkeys(nodes, out)
    finally:
        for node in nodes:
            runners[node].run(["systemctl", "stop", unit], timeout=60, check=False)


def read_beats(runners: Mapping[str, Runner], outs: Mapping[str, str]) -> list[Beat]:
    return [b for node, out in outs.items() for b in parse_beats(runners[node].run(["cat", out], timeout=60,
            check=False).stdout, node)]  # fmt: skip


def wait_beats(runners: Mapping[str, Runner], outs: Mapping[str, str], node: str, after: int, what: str) -> None:
    """Until `node` shows beats counted above `after` (AFTER_BEATS of them), or fail with `what`."""
    deadline = time.monotonic() + AFTER_BEATS * BEAT + 60.0
    while True:
        seen = [b for b in read_beats(runners, {node: outs[node]}) if b.n > after]
        if len(seen) >= AFTER_BEATS or time.monotonic() > deadline:
            assert seen, f"no heartbeat of the guest on {node} {what} within {deadline:.0f}s"
            return
        time.sleep(1.0)


def log_since(runner: Runner, path: str, offset: int) -> str:
    """What `path` on the node gained after byte `offset`."""
    return runner.run(["tail", "-c", f"+{offset + 1}", path], timeout=60, check=False).stdout


def log_size(runner: Runner, path: str) -> int:
    result = runner.run(["stat", "-c", "%s", path], timeout=30, check=False)
    return int(result.stdout.strip()) if result.ok else 0


def sshd_accepted(runner: Runner, since: float) -> list[str]:
    """sshd's `Accepted publickey for nova` lines on the node since `since` (epoch seconds)."""
    journal = runner.run(["journalctl", "--no-pager", "-o", "cat", "-u", "ssh", f"--since=@{int(since)}"],
                         timeout=60, check=False).stdout  # fmt: skip
    return [line.strip() for line in journal.splitlines() if "Accepted publickey for nova" in line]


def downtime(runner: Runner, server_id: str) -> str:
    """libvirt's figures of the completed migration job on the destination (total downtime, time elapsed)."""
    info = runner.run(["virsh", "domjobinfo", server_id, "--completed"], timeout=60, check=False).stdout
    keep = ("Time elapsed:", "Total downtime:", "Memory processed:")
    return "; ".join(" ".join(line.split()) for line in info.splitlines() if line.startswith(keep))


@dataclass
class Guest:
    server_id: str
    boot: str
    disk_line: str
    computes: list[str]
    disk_file: str = ""  # instances_on nfs: the disk file's device:inode on the NFS server


@dataclass(frozen=True)
class MigrationLab:
    nova: Mapping[str, Any]
    admin: Runner
    controller: Runner
    auth: Mapping[str, str]
    runners: Mapping[str, Runner]
    disks: InstanceDisks

    def server_host(self, server_id: str) -> str:
        for node in self.computes():
            if server_id in calls(self.controller, "host-servers", {**self.auth, "host": node})["servers"]:
                return node
        raise AssertionError(f"nova places server {server_id} on none of {self.computes()}")

    @property
    def ports(self) -> list[int]:
        """libvirt's migration port range on the computes (nova's outputs)."""
        return [int(p) for p in self.nova["live_migration"]["ports"]]

    def computes(self) -> list[str]:
        """The computes with instance disks on RBD (a lab may have a local-disk compute beside them), or every
        compute with instances_on nfs."""
        if self.disks.kind == "nfs":
            return [str(c) for c in self.nova["computes"]]
        kinds = self.nova.get("images_types") or {}
        return [str(c) for c in self.nova["computes"] if kinds.get(c, self.nova["images_type"]) == "rbd"]


@pytest.fixture(scope="module")
def mlab(lab: LabContext, runners: dict[str, Runner]) -> MigrationLab:
    why = "live migration with the disk in place needs shared storage (rbd, or instances_on nfs)"
    nl, disks = shared_nova_lab(lab, runners, why=why)
    found = MigrationLab(nl.nova, nl.admin, nl.controller, nl.auth, runners, disks)
    if len(found.computes()) < 2:
        pytest.skip("live migration needs two computes with instance disks on shared storage")
    assert "live_migration" in found.nova, "nova's outputs have no live_migration settings: run `stacklab up` again"
    return found


@pytest.fixture(scope="module")
def guest(mlab: MigrationLab) -> Iterator[Guest]:
    """One guest with a heartbeat for the module, deleted at its end."""
    with (
        guest_image(mlab.controller, mlab.auth, beat=BEAT) as image,
        instance(mlab.controller, mlab.auth, image, "stacklab-suite-migration") as booted,
    ):
        assert booted["status"] == "ACTIVE", f"the guest did not become ACTIVE: {booted}"
        line = mlab.disks.line(str(booted["id"]), lambda text: " boot:" in text, what="' boot:'")
        boot = line.split()[-1].removeprefix("boot:")
        yield Guest(str(booted["id"]), boot, line, mlab.computes(), mlab.disks.identity(str(booted["id"])))


@dataclass(frozen=True)
class Watched:
    problems: list[str]
    pause: Pause
    answer: Mapping[str, Any]  # migration_calls.py's live-migrate answer
    stream: str  # QEMU's migration sockets seen on the destination


def migrate_watched(mlab: MigrationLab, guest: Guest, source: str, tag: str, move: Any) -> Watched:
    """Watch the guest's console and the migration ports on every shared-disk compute, let the guest beat on
    `source`, run `move()` (which returns one live-migrate answer), wait for beats on its destination, and check it
    all."""
    log = console_log(mlab.runners[source], guest.server_id)
    offset = log_size(mlab.runners[source], NOVA_LOG)
    with watching(mlab.runners, guest.computes, log, tag, mlab.ports) as outs:
        wait_beats(mlab.runners, outs, source, 0, "before the migration")
        before = max((b.n for b in read_beats(mlab.runners, {source: outs[source]})), default=0)
        answer = move()
        problems = migration_problems(answer, source, log_since(mlab.runners[source], NOVA_LOG, offset))
        if problems:
            return Watched(problems, Pause(-1.0, None, None), answer, "")
        dest = str(answer["server"]["host"])
        last = max((b.n for b in read_beats(mlab.runners, {source: outs[source]})), default=0)
        wait_beats(mlab.runners, outs, dest, last, "after the migration")
        beats = read_beats(mlab.runners, outs)
        # what the destination's watcher read before the migration began (a shared console.log: the source's lines)
        since = max((b.at for b in beats if b.node == dest and b.n <= before), default=0.0)
        if mlab.disks.kind == "nfs":  # one console.log on the export, read by both watchers
            beats = attribute_shared(beats, source=source, before=before)
        watched = mlab.runners[dest].run(["cat", outs[dest]], timeout=60, check=False).stdout
        sockets = parse_sockets(watched)
    problems, pause = beat_problems(beats, boot=guest.boot, source=source, dest=dest, bound=PAUSE_BOUND)
    faults = kernel_faults(watched, since=since)
    if faults:
        problems.append(f"the guest's kernel faulted on {dest} after the migration: {' | '.join(faults[:3])}")
    inbound = mlab.nova["live_migration"]["inbound"]
    more, stream = stream_problems(sockets, dest=dest, dest_ip=str(inbound[dest]), source_ip=str(inbound[source]),
                                   ports=mlab.ports)  # fmt: skip
    return Watched(problems + more, pause, answer, stream)


def test_live_migration_keeps_the_guest_running(mlab: MigrationLab, guest: Guest, evidence: Evidence) -> None:
    source = mlab.server_host(guest.server_id)
    started = time.time()

    def move() -> Mapping[str, Any]:
        return calls(mlab.controller, "live-migrate", {**mlab.auth, "server_id": guest.server_id})

    watched = migrate_watched(mlab, guest, source, "live", move)
    assert not watched.problems, "; ".join(watched.problems)
    pause, answer = watched.pause, watched.answer
    dest = str(answer["server"]["host"])
    line = mlab.disks.line(guest.server_id, bool, what="its line")
    assert line == guest.disk_line, f"the disk changed across the migration: {guest.disk_line!r} -> {line!r}"
    disk_file = mlab.disks.identity(guest.server_id)
    assert disk_file == guest.disk_file, (
        f"{mlab.disks.where(guest.server_id)} is another file after the migration ({guest.disk_file} -> "
        f"{disk_file}): nova copied the disk (block migration) instead of finding the storage shared"
    )
    mounts, seen = mlab.disks.mount_problems(mlab.runners, (source, dest))
    assert not mounts, "; ".join(mounts)
    accepted = sshd_accepted(mlab.runners[dest], started)
    source_ip = str(mlab.nova["live_migration"]["inbound"][source])
    assert any(f"from {source_ip} " in a for a in accepted), (
        f"{dest}'s sshd shows no login of nova from {source}'s br-mgmt address {source_ip} during the migration: "
        f"{accepted or 'none'}"
    )
    assert pause.last and pause.first
    evidence("migration", f"{source} -> {dest}: {answer['migration']['status']} in {answer['seconds']}s (API call "
                          "to the end of nova's migration record)")  # fmt: skip
    evidence("pause", f"{pause.seconds:.2f}s between beat {pause.last.n} on {source} and beat {pause.first.n} on "
                      f"{dest} (beat every {BEAT:g}s, bound {PAUSE_BOUND:g}s); libvirt: "
                      f"{downtime(mlab.runners[dest], guest.server_id) or 'no job figures'}")  # fmt: skip
    evidence("guest", f"boot id {guest.boot} on both computes, disk line {line!r} intact in "
                      f"{mlab.disks.where(guest.server_id)}")  # fmt: skip
    if mlab.disks.kind == "nfs":
        evidence("shared storage", f"the same disk file (device:inode {disk_file}) before and after; {seen}")
    evidence("transport", f"{dest}'s sshd: {accepted[-1]}; QEMU's stream on {dest}: {watched.stream}")


def test_host_evacuate_live_empties_a_compute(mlab: MigrationLab, guest: Guest, evidence: Evidence) -> None:
    host = mlab.server_host(guest.server_id)
    auth, controller = mlab.auth, mlab.controller
    disabled = calls(controller, "service", {**auth, "host": host, "status": "disabled", "reason": MAINTENANCE})
    try:
        assert disabled["http"] == 200 and disabled["service"]["status"] == "disabled", disabled
        emptied: dict[str, Any] = {}

        def move() -> Mapping[str, Any]:
            emptied.update(calls(controller, "evacuate-live", {**auth, "host": host}))
            assert guest.server_id in emptied["servers"], f"nova does not place the guest on {host}: {emptied}"
            others = [m for m in emptied["migrations"] if m["server_id"] != guest.server_id]
            for other in others:  # every server off the host, not only the suite's
                assert not migration_problems(other, host), migration_problems(other, host)
            return next(m for m in emptied["migrations"] if m["server_id"] == guest.server_id)

        watched = migrate_watched(mlab, guest, host, "evac", move)
        assert not watched.problems, "; ".join(watched.problems)
        pause, answer = watched.pause, watched.answer
        left = calls(controller, "host-servers", {**auth, "host": host})["servers"]
        assert not left, f"nova still places servers on {host} after host-evacuate-live: {left}"
        domains = mlab.runners[host].run(["virsh", "list", "--all", "--uuid"], timeout=60).stdout.split()
        assert guest.server_id not in domains, f"libvirt on {host} still has the guest's domain: {domains}"
    finally:
        enabled = calls(controller, "service", {**auth, "host": host, "status": "enabled"})
    assert enabled["http"] == 200 and enabled["service"]["status"] == "enabled", f"{host} not enabled again: {enabled}"
    assert pause.last and pause.first
    evidence("maintenance", f"{host} disabled ({MAINTENANCE!r}); host-evacuate-live moved {len(emptied['servers'])} "
                            f"server(s) to {answer['server']['host']} in {answer['seconds']}s; nova then placed none "
                            f"on {host} and libvirt there had no domain of them; {host} enabled again")  # fmt: skip
    evidence("pause", f"{pause.seconds:.2f}s between beat {pause.last.n} on {host} and beat {pause.first.n} on "
                      f"{answer['server']['host']} (bound {PAUSE_BOUND:g}s)")  # fmt: skip
