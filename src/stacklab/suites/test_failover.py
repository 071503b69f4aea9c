"""Suite `failover`: cinder-volume is not highly available. Two cinder-volume services manage the same backend
(Ceph RBD) from different nodes (`openstack.cinder.volume_nodes`); the one the scheduler gave a volume manages it
alone, and when it dies the volume's management is stuck until an operator assigns another service with
`cinder-manage volume update_host` (the OpenStack storage guide's words, shown rather than told).

A 1 GiB volume is made through the API and a mark is written into its RBD image as client.cinder. The service that
owns it (its `os-vol-host-attr:host`) is stopped; once cinder's service list shows it down, an extend of the volume
is asked for and is not carried out: the volume keeps its size, the RBD image too, and cinder says why (the
volume's status, its user messages). `cinder-manage volume update_host` on the controller hands the volume to the
other service; the same extend then succeeds (the image grows, the new owner's log names the volume), a snapshot is
made and deleted, and the mark is intact. The stopped service is started again and must be reported up before the
suite ends, even when a step fails (finalizer). Figures: time until cinder saw the service down, and from
`update_host` to the volume managed again.

The LVM half of the seed's warning (the LVM backend's node down, its volumes unavailable to guests, back with the
acknowledged writes) needs an LVM cinder backend and is not part of this suite.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pytest

from stacklab.exec.node_files import systemctl, unit_active
from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.lab_fixtures import Evidence
from stacklab.suites.openstack_calls import admin_auth, os_client, service
from stacklab.suites.storage_paths import RBD_TOOL, SCRATCH, outputs, put_private, rbd_tool

GIB = 1024**3
DOWN_BUDGET = 150.0  # cinder marks a service down after service_down_time (60 s) without a report
STUCK_WINDOW = 30.0  # how long the extend is given to happen while the owner is down
MANAGED_BUDGET = 180.0
CINDER_CONFS = (
    "--config-file",
    "/etc/cinder/cinder.conf",
    "--config-file",
    "/etc/cinder/cinder.conf.d/50-stacklab.conf",
)
VOLUME_LOG = "/var/log/cinder/cinder-volume.log"


def service_host(volume_host: str) -> str:
    """`infra1@rbd#rbd` (a volume's host: node@backend#pool) -> `infra1@rbd` (the cinder-volume service's host)."""
    return volume_host.partition("#")[0]


def node_of(volume_host: str) -> str:
    return volume_host.partition("@")[0]


@dataclass
class Observed:
    """What the suite saw of the volume at one moment."""

    status: str
    size_gb: int
    host: str
    rbd_bytes: int
    mark: str
    messages: list[str] = field(default_factory=list)


def stuck_problems(before: Observed, during: Observed, wanted_gb: int) -> list[str]:
    """Why the volume does not look stuck while its owner is down (empty: it is, as the seed says): the extend must
    not have happened, neither in cinder's record nor on the RBD image, and the volume still names the dead owner."""
    found = []
    if during.size_gb >= wanted_gb or during.rbd_bytes >= wanted_gb * GIB:
        found.append(
            f"the volume was extended to {during.size_gb} GiB (image {during.rbd_bytes} bytes) while its owner "
            f"{before.host} was down: another service manages it (active-active or a shared backend_host?)"
        )
    if during.host != before.host:
        found.append(f"the volume moved from {before.host} to {during.host} without update_host")
    if during.status == "extending" or during.status.startswith("error") or during.messages:
        return found
    found.append(f"the extend left no trace: status {during.status!r}, no user message (was it asked for at all?)")
    return found


def managed_problems(before: Observed, after: Observed, new_host: str, wanted_gb: int) -> list[str]:
    """Why the volume is not managed again after update_host (empty: it is, with its data)."""
    found = []
    if after.host != new_host:
        found.append(f"the volume's host is {after.host}, not {new_host}: update_host did not move it")
    if after.status != "available":
        found.append(f"the volume is {after.status!r}, not 'available'")
    if after.size_gb != wanted_gb or after.rbd_bytes != wanted_gb * GIB:
        found.append(
            f"the extend to {wanted_gb} GiB did not happen: cinder says {after.size_gb} GiB, the RBD image has "
            f"{after.rbd_bytes} bytes"
        )
    if after.mark != before.mark:
        found.append(f"the data changed: the image started with {before.mark!r}, now {after.mark!r}")
    return found


@dataclass(frozen=True)
class FailoverLab:
    cinder: Mapping[str, Any]
    controller: str
    admin_node: str  # the first Ceph monitor: reads the image's size and mark
    auth: Mapping[str, str]
    runners: Mapping[str, Runner]

    def call(self, action: str, **request: Any) -> dict[str, Any]:
        return os_client(self.runners[self.controller], "cinder", action, {**self.auth, **request})

    def api(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return self.call("request", method=method, path=path, body=body)

    def volume_services(self) -> dict[str, str]:
        """cinder-volume services by host (`infra1@rbd`) -> state (up/down), as cinder's service list shows."""
        found = self.api("GET", "/os-services?binary=cinder-volume")["answer"].get("services", [])
        return {str(s["host"]): str(s["state"]) for s in found}

    def observe(self, volume_id: str) -> Observed:
        shown = self.api("GET", f"/volumes/{volume_id}")["answer"].get("volume", {})
        image = f"{self.cinder['ceph_pool']}/volume-{volume_id}"
        info = self.runners[self.admin_node].run(
            ["rbd", "--id", "admin", "info", image, "--format", "json"], timeout=60
        )
        messages = self.api("GET", f"/messages?resource_uuid={volume_id}")["answer"].get("messages", [])
        return Observed(
            status=str(shown.get("status")),
            size_gb=int(shown.get("size") or 0),
            host=str(shown.get("os-vol-host-attr:host")),
            rbd_bytes=int(json.loads(info.stdout)["size"]),
            mark=rbd_tool(
                self.runners[self.admin_node],
                "admin",
                str(self.cinder["ceph_pool"]),
                f"volume-{volume_id}",
                "line",
                "0",
            ).strip(),
            messages=[f"{m.get('event_id')}: {m.get('user_message')}" for m in messages],
        )


@pytest.fixture(scope="module")
def flab(lab: LabContext, runners: dict[str, Runner]) -> FailoverLab:
    cinder = service(lab, "cinder")
    pools = [str(p) for p in cinder.get("pools") or [cinder["pool"]]]
    if len(pools) < 2:
        pytest.skip(f"cinder-volume runs on one node only ({pools}): set openstack.cinder.volume_nodes")
    found = outputs(lab, "ceph")
    if found is None:
        pytest.skip("the lab has no Ceph cluster for cinder's RBD backend")
    admin_node = str(next(iter(found[1]["mons"])))
    put_private(runners[admin_node], RBD_TOOL, resources.files("stacklab.suites").joinpath("rbd_tool.py").read_text())
    return FailoverLab(cinder, str(cinder["node"]), admin_node, admin_auth(lab), runners)


def wait_for(what: str, probe: Callable[[], Any], budget: float) -> tuple[Any, float]:
    """(what probe() returned once true, seconds waited); fails naming `what` and the last answer."""
    start = time.monotonic()
    while not (seen := probe()):
        assert time.monotonic() - start < budget, f"{what} not within {budget:g}s"
        time.sleep(3.0)
    return seen, time.monotonic() - start


@pytest.fixture
def volume(flab: FailoverLab) -> Iterator[dict[str, Any]]:
    """A 1 GiB volume; its snapshots and itself deleted afterwards (a status the failure left is reset first)."""
    made = flab.call("create", size_gb=1, name="stacklab-suite-failover")
    yield made
    snaps = flab.api("GET", f"/snapshots?volume_id={made['id']}")["answer"].get("snapshots", [])
    for snap in snaps:
        flab.api("POST", f"/snapshots/{snap['id']}/action", {"os-force_delete": {}})
    shown = flab.call("show", volume_id=made["id"])
    if shown.get("http") == 200:
        if shown.get("status") != "available":
            flab.api("POST", f"/volumes/{made['id']}/action", {"os-reset_status": {"status": "available"}})
        flab.call("delete", volume_id=made["id"])


def restart_owner(flab: FailoverLab, node: str, host: str) -> float:
    """Start the stopped cinder-volume again and wait until cinder reports it up; seconds it took."""
    runner = flab.runners[node]
    if not unit_active(runner, "cinder-volume"):
        systemctl(runner, "start", "cinder-volume")
    _, took = wait_for(
        f"cinder-volume on {node} ({host}) reported up again",
        lambda: flab.volume_services().get(host) == "up",
        DOWN_BUDGET,
    )
    return took


def test_a_volume_is_stuck_with_its_dead_service_until_update_host(
    flab: FailoverLab, volume: dict[str, Any], evidence: Evidence
) -> None:
    vid = str(volume["id"])
    pool, image = str(flab.cinder["ceph_pool"]), f"volume-{vid}"
    owner_host = service_host(str(volume["host"]))
    owner = node_of(owner_host)
    services = flab.volume_services()
    others = sorted(h for h, state in services.items() if h != owner_host and state == "up")
    assert owner_host in services, f"the volume's host {volume['host']} is no cinder-volume service: {services}"
    assert others, f"no other cinder-volume service is up to take over: {services}"
    new_host = others[0]
    new_node = node_of(new_host)

    mark = f"stacklab-failover:{secrets.token_hex(8)}"
    admin = flab.runners[flab.admin_node]
    put_private(admin, f"{SCRATCH}/failover-mark", mark + "\n")
    rbd_tool(admin, str(flab.cinder["ceph_user"]), pool, image, "write", "0", f"{SCRATCH}/failover-mark")
    before = flab.observe(vid)
    assert before.mark == mark, f"the mark written as client.cinder reads back as {before.mark!r}"
    evidence("volume", f"{vid} on {volume['host']} ({pool}/{image}, mark {mark!r} written as client.cinder)")

    stopped = time.monotonic()
    systemctl(flab.runners[owner], "stop", "cinder-volume")
    try:
        _, down_after = wait_for(
            f"cinder's service list to show {owner_host} down",
            lambda: flab.volume_services().get(owner_host) == "down",
            DOWN_BUDGET,
        )
        asked = flab.api("POST", f"/volumes/{vid}/action", {"os-extend": {"new_size": 2}})
        time.sleep(STUCK_WINDOW)
        during = flab.observe(vid)
        problems = stuck_problems(before, during, 2)
        assert not problems, "; ".join(problems)
        evidence(
            "stuck",
            f"{owner_host} stopped, down in cinder's list after {down_after:.0f}s; extend to 2 GiB "
            f"(HTTP {asked['http']}) not done in {STUCK_WINDOW:g}s: status {during.status}, "
            f"{during.size_gb} GiB, image {during.rbd_bytes} bytes, messages {during.messages}",
        )

        reassigned = time.monotonic()
        moved = flab.runners[flab.controller].run(
            [
                "runuser",
                "-u",
                "cinder",
                "--",
                "cinder-manage",
                *CINDER_CONFS,
                "volume",
                "update_host",
                "--currenthost",
                owner_host,
                "--newhost",
                new_host,
            ],
            timeout=120,
            check=False,
        )
        assert moved.ok, f"cinder-manage volume update_host failed: {moved.stderr[-1500:]}"
        if during.status != "available":  # an extend the dead owner never answered leaves its status behind
            flab.api("POST", f"/volumes/{vid}/action", {"os-reset_status": {"status": "available"}})
        again = flab.api("POST", f"/volumes/{vid}/action", {"os-extend": {"new_size": 2}})
        assert again["http"] == 202, f"cinder refused the extend after update_host: {again}"
        after, _ = wait_for(
            "the extend by the new owner",
            lambda: (seen := flab.observe(vid)).size_gb == 2 and seen.status == "available" and seen,
            MANAGED_BUDGET,
        )
        snap = flab.api("POST", "/snapshots", {"snapshot": {"volume_id": vid, "name": "stacklab-suite-failover"}})
        assert snap["http"] == 202, f"cinder refused a snapshot after update_host: {snap}"
        snap_id = str(snap["answer"]["snapshot"]["id"])
        wait_for("the snapshot by the new owner", lambda: snapshot_status(flab, snap_id) == "available", MANAGED_BUDGET)
        managed = time.monotonic() - reassigned
        flab.api("DELETE", f"/snapshots/{snap_id}")
        wait_for("the snapshot's deletion", lambda: snapshot_status(flab, snap_id) == "gone", MANAGED_BUDGET)
        problems = managed_problems(before, after, new_host, 2)
        assert not problems, "; ".join(problems)
        done_by = {
            node: logged_requests(flab.runners[node], [again["request_id"], snap["request_id"]])
            for node in (new_node, owner)
        }
        assert done_by[new_node] == 2 and done_by[owner] == 0, (
            f"the extend and the snapshot after update_host were not both done by {new_node}'s cinder-volume: "
            f"its log names {done_by[new_node]} of their requests, {owner}'s {done_by[owner]}"
        )
        evidence(
            "managed again",
            f"update_host {owner_host} -> {new_host}; extend to 2 GiB (image "
            f"{after.rbd_bytes} bytes) and a snapshot done by {new_node}'s cinder-volume "
            f"(requests {again['request_id']}, {snap['request_id']} completed in its log); mark intact: {after.mark!r}",
        )
        evidence(
            "measured: failover",
            f"owner seen down {down_after:.0f}s after its stop; managed again "
            f"{managed:.0f}s after update_host; {time.monotonic() - stopped:.0f}s "
            "from the stop to the snapshot deleted",
        )
    finally:
        back = restart_owner(flab, owner, owner_host)
    evidence("restored", f"cinder-volume on {owner} started again, reported up after {back:.0f}s")


def logged_requests(runner: Runner, request_ids: list[str]) -> int:
    """How many of the requests the node's cinder-volume log shows completed (`... completed successfully`)."""
    log = runner.run(["grep", "completed successfully", VOLUME_LOG], timeout=30, check=False).stdout
    return sum(1 for rid in request_ids if rid and rid in log)


def snapshot_status(flab: FailoverLab, snap_id: str) -> str:
    shown = flab.api("GET", f"/snapshots/{snap_id}")
    if shown["http"] == 404:
        return "gone"
    status = str(shown["answer"].get("snapshot", {}).get("status"))
    assert not status.startswith("error"), f"snapshot {snap_id}: {status}"
    return status
