"""Suite `swift_loss`: Swift under loss, beyond the replica repair of `replication`.

A whole storage node lost while objects are written: a writer streams objects through the proxy; after its first
acknowledged writes every Swift daemon of one storage node (servers, replicators, auditors, updaters, rsync) is
stopped. Every write must still be acknowledged (201): the proxy puts the lost node's replica on a handoff device
of a surviving node, which the ring names (`swift-get-nodes`) and which holds the object's `.data` on disk. When
the node comes back, the handoff's replicator hands the object back: the lost node's primary device gets the bytes
and the handoff copy is removed.

A device unmounted: the devices are mount points and the servers run with `mount_check = true`. With one device of
an object's primaries unmounted, that object server answers 507 for the device and recon lists it as unmounted; a
write still succeeds, with the replica on a handoff instead of in the bare mount point directory, and the
replicator of another holder reports the device unmounted and syncs to a handoff instead. Once the device is
mounted again its replica is handed back.

A device full: the tmpfs of one device of an object's primaries is shrunk to what it holds plus 1 MiB and a filler
file takes the rest (ENOSPC). Its object server answers the proxy's PUT 507 (its request log says so), recon's
disk usage shows the device with nothing available, the write is still 201 with the replica on a handoff, and no
file of the object is on the full device. Once the filler is gone (and the device's size restored) the handoff's
replicator hands the replica back.

Each step has a bounded wait; the node's daemons and the device mount are restored even when a step fails. Needs
more devices than replicas (`openstack.swift.devices`), else there is no handoff device; skipped, saying so. The
unmounted and full device cases need devices that are file systems of their own (`device_kind` tmpfs): on a host
whose tmpfs holds no user xattrs the devices are plain directories and both are skipped, saying so.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.lab_fixtures import Evidence
from stacklab.suites.openstack_calls import admin_auth, os_client, service

OBJECT_CONF = "/etc/swift/stacklab/object-server.conf"
OBJECT_PORT = 6200
HANDBACK_BUDGET = 180.0
ERROR_SUPPRESSION = 75.0  # the proxy's error_suppression_interval (60 s) and a margin
WRITES = 8
WRITE_SIZE = 64 * 1024
LOCATE = """
import json, sys
from itertools import islice
from swift.common.ring import Ring
from swift.common.utils import hash_path
account, container, obj = sys.argv[1:4]
ring = Ring("/etc/swift", ring_name="object")
part, nodes = ring.get_nodes(account, container, obj)
more = islice(ring.get_more_nodes(part), 6)
print(json.dumps({"part": part, "hash": hash_path(account, container, obj),
                  "primaries": [{"ip": n["ip"], "device": n["device"]} for n in nodes],
                  "handoffs": [{"ip": n["ip"], "device": n["device"]} for n in more]}))
"""


@dataclass(frozen=True)
class Place:
    node: str
    device: str
    directory: str  # the object's hash directory on that device


def placement_problems(
    primaries: Sequence[Place], handoffs: Sequence[Place], holding: Mapping[Place, bool], lost: str
) -> list[str]:
    """Why a write made while `lost` was gone (a node, or a `node:device`) did not land as Swift promises (empty:
    it did): every surviving primary holds it, the lost place does not, and the first handoff outside the lost
    node or device holds the lost replica."""
    found = []

    def gone(place: Place) -> bool:
        return lost in (place.node, f"{place.node}:{place.device}")

    for place in primaries:
        if gone(place) and holding.get(place):
            found.append(f"{place.node}:{place.device} holds the object although it was lost")
        elif not gone(place) and not holding.get(place):
            found.append(f"the surviving primary {place.node}:{place.device} has no replica in {place.directory}")
    if not any(gone(p) for p in primaries):
        return found  # the lost place is not one of this object's primaries: no handoff needed
    usable = [h for h in handoffs if not gone(h)]
    if not usable:
        return [*found, f"the ring names no handoff outside {lost}: give the lab more devices than replicas"]
    if not holding.get(usable[0]):
        holders = [f"{h.node}:{h.device}" for h in handoffs if holding.get(h)]
        found.append(
            f"the first handoff {usable[0].node}:{usable[0].device} has no replica (handoffs holding it: "
            f"{holders or 'none'}): the lost replica went nowhere"
        )
    return found


def handback_problems(
    primary: Place, handoff: Place, primary_sha: str | None, handoff_sha: str | None, wanted: str
) -> list[str]:
    """Why the replica is not back where the ring wants it (empty: the primary has the bytes, the handoff none)."""
    found = []
    if primary_sha != wanted:
        found.append(f"{primary.node}:{primary.device} has {primary_sha or 'no replica'}, not the object {wanted}")
    if handoff_sha is not None:
        found.append(f"the handoff {handoff.node}:{handoff.device} still holds its copy in {handoff.directory}")
    return found


class Cluster:
    def __init__(self, lab: LabContext, runners: dict[str, Runner]) -> None:
        self.swift, self.runners, self.lab = service(lab, "swift"), runners, lab
        self.proxy = str(self.swift["proxy_node"])
        self.nodes = {str(k): str(v) for k, v in self.swift["storage_nodes"].items()}
        self.by_ip = {ip: node for node, ip in self.nodes.items()}
        others = sorted(n for n in lab.nodes if n != self.proxy and n not in self.nodes)
        self.client = others[0] if others else self.proxy
        self.auth = admin_auth(lab)
        self.container = f"stacklab-suite-loss-{secrets.token_hex(3)}"
        self.root = str(self.swift.get("device_root") or str(self.swift["devices"]).rsplit("/", 1)[0])
        self.devices = [str(d) for d in self.swift.get("device_names") or [str(self.swift["devices"]).rsplit("/")[-1]]]
        self.written: list[str] = []
        self.device_kind = str(self.swift.get("device_kind") or "tmpfs")
        # node or node:device -> when it was last restored: the proxy error-limits a node that failed for a minute
        # (error_suppression_interval), so a fresh fault is put on a place it has not been skipping
        self.faulted: dict[str, float] = {}

    def settle(self) -> float:
        """Wait until the proxy stops skipping the places that failed (a 507 error-limits a device for its
        error_suppression_interval, and its replica would go to another handoff than the ring's first); the wait."""
        wait = max(self.faulted.values(), default=-1e9) + ERROR_SUPPRESSION - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return max(wait, 0.0)

    def needs_mount_points(self, case: str) -> None:
        """Skip `case` when the devices are plain directories (no mount point to unmount, no file system to fill)."""
        if self.device_kind != "tmpfs":
            pytest.skip(
                f"{case}: the devices are {self.device_kind} devices (this host's tmpfs holds no user xattrs, or the "
                "lab sets openstack.swift.device_kind), which are no file systems of their own; mount_check is off"
            )

    def put(self, obj: str, runner: Runner | None = None) -> dict[str, Any]:
        request = {**self.auth, "container": self.container, "object": obj, "size": WRITE_SIZE}
        started = time.monotonic()
        out = os_client(runner or self.runners[self.client], "swift", "put", request)
        self.written.append(obj)
        return {**out, "seconds": time.monotonic() - started}

    def get(self, obj: str) -> dict[str, Any]:
        return os_client(
            self.runners[self.client], "swift", "get", {**self.auth, "container": self.container, "object": obj}
        )

    def locate(self, account: str, obj: str) -> tuple[list[Place], list[Place]]:
        result = self.runners[self.proxy].run(["python3", "-c", LOCATE, account, self.container, obj], timeout=60)
        where = json.loads(result.stdout)
        digest, part = str(where["hash"]), where["part"]

        def place(n: Mapping[str, str]) -> Place:
            return Place(
                self.by_ip[n["ip"]], n["device"], f"{self.root}/{n['device']}/objects/{part}/{digest[-3:]}/{digest}"
            )

        return [place(n) for n in where["primaries"]], [place(n) for n in where["handoffs"]]

    def sha(self, place: Place) -> str | None:
        """sha256 of the single .data file in the object's directory there, or None when there is none."""
        script = 'set -- "$1"/*.data; [ "$#" -eq 1 ] && [ -f "$1" ] && sha256sum "$1"'
        result = self.runners[place.node].run(["sh", "-c", script, "replica", place.directory], timeout=30, check=False)
        return result.stdout.split()[0] if result.ok else None

    def replicate_all(self, places: Sequence[Place]) -> None:
        """One replicator pass per node for all the places' devices and partitions there."""
        for node in dict.fromkeys(p.node for p in places):
            here = [p for p in places if p.node == node]
            self.replicate(*here)

    def replicate(self, *places: Place) -> str:
        """One pass of the object replicator on the places' node for their devices and partitions; its console
        log."""
        part = ",".join(dict.fromkeys(p.directory.split("/objects/")[1].split("/")[0] for p in places))
        devices = ",".join(dict.fromkeys(p.device for p in places))
        place = places[0]
        result = self.runners[place.node].run(
            [
                "runuser",
                "-u",
                "swift",
                "--",
                "swift-object-replicator",
                OBJECT_CONF,
                "--once",
                "--verbose",
                f"--partitions={part}",
                f"--devices={devices}",
            ],
            timeout=300,
        )
        return result.stdout + result.stderr

    def swift_units(self, node: str) -> list[str]:
        """The swift daemons running on the node, and rsync (its replication endpoint)."""
        listing = (
            self.runners[node]
            .run(
                [
                    "systemctl",
                    "list-units",
                    "--state=active",
                    "--plain",
                    "--no-legend",
                    "swift-*.service",
                    "rsync.service",
                ],
                timeout=60,
            )
            .stdout
        )
        return [line.split()[0] for line in listing.splitlines() if line.strip()]


def declared_swift(lab: LabContext) -> tuple[int, int, int]:
    """(replicas, devices per node, nodes) as the lab file declares them."""
    from stacklab.model.lab import Swift

    swift = (lab.declared.get("openstack") or {}).get("swift") or {}
    nodes = swift.get("nodes") or [n for n, spec in lab.nodes.items() if "swift" in spec.get("roles", [])]
    return (
        int(swift.get("replicas", Swift.model_fields["replicas"].default)),
        int(swift.get("devices", Swift.model_fields["devices"].default)),
        len(nodes),
    )


@pytest.fixture(scope="module")
def cluster(lab: LabContext, runners: dict[str, Runner]) -> Iterator[Cluster]:
    replicas, devices, nodes = declared_swift(lab)
    if replicas < 2 or devices * nodes <= replicas:
        pytest.skip(
            f"{nodes} node(s) x {devices} device(s) for {replicas} replica(s): no quorum left or no handoff "
            "device for a lost one (set openstack.swift.devices: 2)"
        )
    made = Cluster(lab, runners)
    yield made
    for obj in dict.fromkeys(made.written):
        os_client(runners[made.client], "swift", "delete", {**made.auth, "container": made.container, "object": obj})


def wait_for(probe: Callable[[], bool], budget: float = HANDBACK_BUDGET) -> float | None:
    """Seconds until probe() held, or None when it did not within the budget."""
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > budget:
            return None
        time.sleep(3.0)
    return time.monotonic() - start


def test_a_lost_node_s_writes_go_to_a_handoff_and_come_back(
    cluster: Cluster, lab: LabContext, evidence: Evidence
) -> None:
    lost = sorted(cluster.nodes)[-1]
    lost_runner = cluster.runners[lost]
    units = cluster.swift_units(lost)
    assert any(u.startswith("swift-object") for u in units), f"no swift daemons run on {lost}: {units}"
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    first_two = threading.Event()

    def writer() -> None:
        runner = lab.runner(cluster.client)  # its own connection: the main thread stops the node meanwhile
        try:
            for index in range(WRITES):
                results.append({"name": f"obj-{index}", **cluster.put(f"obj-{index}", runner)})
                if index == 1:
                    first_two.set()
                time.sleep(1.0)
        except Exception as exc:  # the test reports it below
            errors.append(repr(exc))
        finally:
            first_two.set()
            runner.close()

    thread = threading.Thread(target=writer, name="swift-writer")
    thread.start()
    stopped_after = 0
    try:
        assert first_two.wait(timeout=120), "the writer did not get two objects acknowledged"
        stopped_after = len(results)
        lost_runner.run(["systemctl", "stop", *units], timeout=180)
        thread.join(timeout=600)
        assert not errors, f"the writer failed: {errors}"
        refused = [(r["name"], r["http"]) for r in results if r["http"] != 201]
        assert not refused, f"with {lost} lost, these writes were not acknowledged: {refused}"
        assert len(results) == WRITES, f"{len(results)} of {WRITES} writes done"
        during = results[stopped_after:]
        assert during, "no write happened while the node was lost"
        account = str(results[0]["account"])
        moved: list[tuple[str, Place, Place, str]] = []
        for result in during:
            primaries, handoffs = cluster.locate(account, result["name"])
            places = [*primaries, *handoffs[:3]]
            holding = {p: cluster.sha(p) == result["sha256"] for p in places}
            problems = placement_problems(primaries, handoffs, holding, lost)
            assert not problems, f"{result['name']}: " + "; ".join(problems)
            primary = next(p for p in primaries if p.node == lost)
            handoff = next(h for h in handoffs if h.node != lost)
            moved.append((result["name"], primary, handoff, result["sha256"]))
        name, primary, handoff, _ = moved[0]
        nodes_out = (
            cluster.runners[cluster.proxy]
            .run(["swift-get-nodes", "/etc/swift/object.ring.gz", account, cluster.container, name], timeout=60)
            .stdout
        )
        shown = [line.strip() for line in nodes_out.splitlines() if "Handoff" in line or "Server:Port" in line]
        evidence(
            "handoff",
            f"{len(during)} writes while {lost}'s {len(units)} swift daemons were stopped, all 201 "
            f"(mean {sum(r['seconds'] for r in during) / len(during):.2f}s per PUT, before: "
            f"{sum(r['seconds'] for r in results[:stopped_after]) / stopped_after:.2f}s); {name}: "
            f"primary {primary.node}:{primary.device} lost, .data on handoff "
            f"{handoff.node}:{handoff.device} ({handoff.directory}); swift-get-nodes: "
            f"{' | '.join(shown[:6])}",
        )
    finally:
        thread.join(timeout=600)
        lost_runner.run(["systemctl", "start", *units], timeout=180)
        cluster.faulted[lost] = time.monotonic()
    started = time.monotonic()
    cluster.replicate_all([handoff for _name, _primary, handoff, _sha in moved])
    for name, primary, handoff, sha in moved:
        took = wait_for(handed_back(cluster, primary, handoff, sha))
        problems = handback_problems(primary, handoff, cluster.sha(primary), cluster.sha(handoff), sha)
        assert took is not None and not problems, f"{name} not handed back in {HANDBACK_BUDGET:g}s: {problems}"
        got = cluster.get(name)
        assert got["http"] == 200 and got["sha256"] == sha, f"{name} read back as {got}"
    evidence(
        "handed back",
        f"{lost} back: the handoffs' replicators gave {len(moved)} objects to {lost}'s devices "
        f"and removed their copies in {time.monotonic() - started:.1f}s; every object reads back",
    )
    evidence(
        "measured: node loss",
        f"{len(during)} writes during the loss all acknowledged; hand-back of "
        f"{len(moved)} objects {time.monotonic() - started:.1f}s after the node returned",
    )


def handed_back(cluster: Cluster, primary: Place, handoff: Place, sha: str) -> Callable[[], bool]:
    return lambda: not handback_problems(primary, handoff, cluster.sha(primary), cluster.sha(handoff), sha)


def http_code(runner: Runner, method: str, url: str) -> str:
    verb = ["-I"] if method == "HEAD" else ["-X", method]  # -X HEAD would wait for a body that never comes
    result = runner.run(
        ["curl", "-s", "-o", "/dev/null", "-m", "10", *verb, "-w", "%{http_code}", url], timeout=30, check=False
    )
    return result.stdout.strip()


def test_an_unmounted_device_answers_507_and_replication_routes_around_it(cluster: Cluster, evidence: Evidence) -> None:
    name = f"unmounted-{secrets.token_hex(3)}"
    probe = cluster.put("probe")  # the container exists and gives the account
    account = str(probe["account"])
    primaries, handoffs = cluster.locate(account, name)
    victim = primaries[0]
    cluster.needs_mount_points("an unmounted device")
    unit = str((cluster.swift.get("mount_units") or {}).get(victim.device, ""))
    assert unit, f"the swift service names no mount unit for {victim.device}: devices are not mount points"
    runner = cluster.runners[victim.node]
    address = cluster.nodes[victim.node]
    part_path = victim.directory.split("/objects/")[1].split("/")[0]
    object_url = f"http://{address}:{OBJECT_PORT}/{victim.device}/{part_path}/{account}/{cluster.container}/{name}"
    mount_point = f"{cluster.root}/{victim.device}"
    runner.run(["systemctl", "stop", unit], timeout=120)
    try:
        assert not runner.run(["mountpoint", "-q", mount_point], timeout=30, check=False).ok, (
            f"{mount_point} still mounted"
        )
        code = http_code(runner, "HEAD", object_url)
        assert code == "507", f"{victim.node}'s object server answers {code} for the unmounted {victim.device}, not 507"
        recon = runner.run(["curl", "-s", "-m", "10", f"http://{address}:{OBJECT_PORT}/recon/unmounted"], timeout=30)
        unmounted = {d.get("device"): d.get("mounted") for d in json.loads(recon.stdout or "[]")}
        assert unmounted.get(victim.device) is False, (
            f"recon does not list {victim.device} as unmounted: {recon.stdout}"
        )
        put = cluster.put(name)
        assert put["http"] == 201, f"with {victim.node}:{victim.device} unmounted the write got {put['http']}"
        holding = {p: cluster.sha(p) == put["sha256"] for p in [*primaries, *handoffs[:3]]}
        problems = placement_problems(primaries, handoffs, holding, f"{victim.node}:{victim.device}")
        assert not problems, "; ".join(problems)
        bare = runner.run(["find", mount_point, "-mindepth", "1", "-maxdepth", "1"], timeout=30).stdout.split()
        assert not bare, f"Swift wrote into the bare mount point {mount_point} of the unmounted device: {bare}"
        holder = next(p for p in primaries if p != victim)
        log = cluster.replicate(holder)
        assert "responded as unmounted" in log, (
            f"{holder.node}'s replicator did not report {victim.node}:{victim.device} unmounted; its log ends: "
            f"{log[-800:]}"
        )
        handoff = next(h for h in handoffs if h != victim)
        evidence(
            "unmounted",
            f"{victim.node}:{mount_point} unmounted: HEAD {object_url} -> 507, recon/unmounted "
            f"{recon.stdout.strip()}; PUT {name} -> 201 with the replica on {handoff.node}:"
            f"{handoff.device}, nothing in the bare mount point; {holder.node}'s replicator: "
            "'responded as unmounted'",
        )
    finally:
        runner.run(["systemctl", "start", unit], timeout=120)
        cluster.faulted[f"{victim.node}:{victim.device}"] = time.monotonic()
    assert runner.run(["mountpoint", "-q", mount_point], timeout=30, check=False).ok, f"{mount_point} not remounted"
    started = time.monotonic()
    cluster.replicate(handoff)
    took = wait_for(handed_back(cluster, victim, handoff, put["sha256"]))
    problems = handback_problems(victim, handoff, cluster.sha(victim), cluster.sha(handoff), put["sha256"])
    assert took is not None and not problems, "; ".join(problems)
    evidence(
        "measured: unmounted device",
        f"replica handed back to {victim.node}:{victim.device} {time.monotonic() - started:.1f}s after the remount",
    )


FILLER = "stacklab-filler"


def device_bytes(runner: Runner, mount_point: str) -> tuple[int, int, int]:
    """(used, size, available) bytes of the file system at the mount point."""
    out = runner.run(["df", "-B1", "--output=used,size,avail", mount_point], timeout=30).stdout.split()
    used, size, avail = (int(v) for v in out[-3:])
    return used, size, avail


def object_log_lines(runner: Runner, since: float, path: str) -> list[str]:
    """The object server's request log lines (journal) since `since` that name `path`."""
    log = runner.run(
        ["journalctl", "-u", "swift-object", "-o", "cat", "--no-pager", f"--since=@{int(since) - 1}"],
        timeout=60,
        check=False,
    ).stdout
    return [line for line in log.splitlines() if path in line]


def proxy_seconds(runner: Runner, since: float, path: str) -> str:
    """The proxy's own time for the PUT of `path` (its request log: the field after the transaction id and one
    `-`), without the client's keystone login and start-up; '?' when not logged."""
    log = runner.run(
        ["journalctl", "-u", "swift-proxy", "-o", "cat", "--no-pager", f"--since=@{int(since) - 1}"],
        timeout=60,
        check=False,
    ).stdout
    for line in log.splitlines():
        fields = line.split()
        if f"PUT {path} " in line and " 201 " in line:
            tx = next((i for i, f in enumerate(fields) if f.startswith("tx")), None)
            if tx is not None and tx + 2 < len(fields):
                return f"{fields[tx + 2]}s"
    return "?"


def full_device_problems(
    codes: Sequence[str], recon: Mapping[str, Any] | None, files_on_full: Sequence[str], device: str
) -> list[str]:
    """Why the full device did not refuse the write as Swift promises (empty: it did): its object server answered
    the PUT 507, recon shows it with (almost) nothing available, and none of the object's files are on it."""
    found = []
    if "507" not in codes:
        found.append(f"{device}'s object server answered the PUT {codes or 'never (no request logged)'}, not 507")
    if recon is None:
        found.append(f"recon/diskusage does not list {device}")
    elif int(recon.get("avail", -1)) >= WRITE_SIZE or recon.get("mounted") is not True:
        found.append(f"recon/diskusage does not show {device} full: {dict(recon)}")
    if files_on_full:
        found.append(f"the full device holds files of the object: {list(files_on_full)}")
    return found


def test_a_full_device_answers_507_and_replication_routes_around_it(cluster: Cluster, evidence: Evidence) -> None:
    cluster.needs_mount_points("a full device")
    probe = cluster.put("probe-full")
    account = str(probe["account"])
    cluster.settle()
    name = f"full-{secrets.token_hex(3)}"
    primaries, handoffs = cluster.locate(account, name)
    victim = primaries[0]
    runner, address = cluster.runners[victim.node], cluster.nodes[victim.node]
    mount_point = f"{cluster.root}/{victim.device}"
    filler = f"{mount_point}/{FILLER}"
    used, size, _avail = device_bytes(runner, mount_point)
    # a tmpfs is shrunk (never below what it holds) rather than filled to its 512 MiB: the filler costs 1 MiB of RAM
    runner.run(["mount", "-o", f"remount,size={used + (1 << 20)}", mount_point], timeout=30)
    try:
        fill = runner.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], timeout=120, check=False)
        assert "No space left on device" in fill.stderr, f"filling {mount_point} did not end in ENOSPC: {fill.stderr}"
        recon_out = runner.run(
            ["curl", "-s", "-m", "10", f"http://{address}:{OBJECT_PORT}/recon/diskusage"], timeout=30
        ).stdout
        recon = next((d for d in json.loads(recon_out or "[]") if d.get("device") == victim.device), None)
        since = time.time()
        put = cluster.put(name)
        assert put["http"] == 201, f"with {victim.node}:{victim.device} full the write got {put['http']}"
        part = victim.directory.split("/objects/")[1].split("/")[0]
        path = f"/{victim.device}/{part}/{account}/{cluster.container}/{name}"
        lines = object_log_lines(runner, since, f'"PUT {path}"')
        codes = [line.split(f'"PUT {path}"')[1].split()[0] for line in lines]
        files = runner.run(["find", victim.directory, "-type", "f"], timeout=30, check=False).stdout.split()
        problems = full_device_problems(codes, recon, files, f"{victim.node}:{victim.device}")
        holding = {p: cluster.sha(p) == put["sha256"] for p in [*primaries, *handoffs[:3]]}
        problems += placement_problems(primaries, handoffs, holding, f"{victim.node}:{victim.device}")
        assert not problems, "; ".join(problems)
        handoff = next(h for h in handoffs if h != victim)
        in_proxy = proxy_seconds(cluster.runners[cluster.proxy], since, f"/v1/{account}/{cluster.container}/{name}")
        recon_cli = cluster.runners[cluster.proxy].run(["swift-recon", "object", "-d"], timeout=60, check=False)
        usage = [line.strip() for line in recon_cli.stdout.splitlines() if "usage" in line.lower() or "%" in line]
        evidence(
            "full",
            f"{victim.node}:{mount_point} full ({FILLER}: ENOSPC; recon/diskusage {json.dumps(recon)}); PUT {name} "
            f"-> 201 in {put['seconds']:.2f}s (proxy {in_proxy}), {victim.node}'s object server logged PUT {path} "
            f"{codes}, the "
            f"replica went to the handoff {handoff.node}:{handoff.device}, no file of it on the full device; "
            f"swift-recon -d: {' | '.join(usage[:4])}",
        )
    finally:
        runner.run(["rm", "-f", filler], timeout=30)
        runner.run(["mount", "-o", f"remount,size={size}", mount_point], timeout=30)
        cluster.faulted[f"{victim.node}:{victim.device}"] = time.monotonic()
    assert device_bytes(runner, mount_point)[1] == size, f"{mount_point} not back to {size} bytes"
    started = time.monotonic()
    cluster.replicate(handoff)
    took = wait_for(handed_back(cluster, victim, handoff, put["sha256"]))
    problems = handback_problems(victim, handoff, cluster.sha(victim), cluster.sha(handoff), put["sha256"])
    assert took is not None and not problems, (
        f"the replica was not handed back to {victim.node}:{victim.device} once it had room: " + "; ".join(problems)
    )
    evidence(
        "measured: full device",
        f"PUT with a full primary {put['seconds']:.2f}s from the client, {in_proxy} in the proxy (201 on a handoff); "
        "replica handed back to "
        f"{victim.node}:{victim.device} {time.monotonic() - started:.1f}s after the filler was removed",
    )
