"""Suite `replication`: Swift keeps the replicas the lab declares (`openstack.swift.replicas`, 1-5) on distinct
storage nodes and repairs them over br-storage.

An object goes in through the proxy (from a client node, with a keystone token); the object ring (read on the
proxy node with Swift's own code) says which partition and nodes hold it, and each of those nodes has exactly one
`.data` file with the object's bytes. A replica lost with its whole partition comes back after the replicator of
another holder runs once; with a storage node's object server stopped, a write still succeeds (the other primaries
or a handoff take it), reads return the bytes, and once the server is back the replicators give it its replica.
The repair tests need a second replica and skip, saying so, on a lab that declares one. Failures name the node
and path.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.lab_fixtures import Evidence
from stacklab.suites.openstack_calls import admin_auth, os_client, service

OBJECT_CONF = "/etc/swift/stacklab/object-server.conf"
REPAIR_BUDGET = 120.0
LOCATE = """
import json, sys
from swift.common.ring import Ring
from swift.common.utils import hash_path
account, container, obj = sys.argv[1:4]
part, nodes = Ring("/etc/swift", ring_name="object").get_nodes(account, container, obj)
print(json.dumps({"part": part, "hash": hash_path(account, container, obj),
                  "nodes": [{"ip": n["ip"], "device": n["device"]} for n in nodes]}))
"""


class SwiftLab:
    def __init__(self, lab: LabContext, runners: dict[str, Runner]) -> None:
        self.swift, self.runners = service(lab, "swift"), runners
        swift = self.swift
        self.proxy = str(swift["proxy_node"])
        self.nodes: dict[str, str] = {str(k): str(v) for k, v in swift["storage_nodes"].items()}
        self.by_ip = {ip: node for node, ip in self.nodes.items()}
        others = sorted(n for n in lab.nodes if n != self.proxy and n not in self.nodes)
        self.client = others[0] if others else self.proxy
        self.auth = admin_auth(lab)
        self.container = f"stacklab-suite-{secrets.token_hex(3)}"
        self.declared = declared_replicas(lab)

    def tool(self, action: str, obj: str, **extra: Any) -> dict[str, Any]:
        request = {**self.auth, "container": self.container, "object": obj, **extra}
        return os_client(self.runners[self.client], "swift", action, request)

    def locate(self, account: str, obj: str) -> dict[str, Any]:
        result = self.runners[self.proxy].run(["python3", "-c", LOCATE, account, self.container, obj], timeout=60)
        return dict(json.loads(result.stdout))

    def object_dir(self, where: Mapping[str, Any], node_ip: str) -> str:
        device = next(n["device"] for n in where["nodes"] if n["ip"] == node_ip)
        digest = str(where["hash"])
        return f"{self.swift['devices'].rsplit('/', 1)[0]}/{device}/objects/{where['part']}/{digest[-3:]}/{digest}"

    def replica_sha(self, node: str, directory: str) -> str | None:
        """sha256 of the single .data file in the object's dir on `node`, or None if there is none."""
        script = 'set -- "$1"/*.data; [ "$#" -eq 1 ] && [ -f "$1" ] && sha256sum "$1"'
        result = self.runners[node].run(["sh", "-c", script, "replica", directory], timeout=30, check=False)
        return result.stdout.split()[0] if result.ok else None

    def replicate_once(self, node: str) -> None:
        self.runners[node].run(["runuser", "-u", "swift", "--", "swift-object-replicator", OBJECT_CONF, "once"],
                               timeout=300)  # fmt: skip


def declared_replicas(lab: LabContext) -> int:
    """The replica count the lab file declares (its default when the file says nothing), not the one Swift built."""
    from stacklab.model.lab import Swift

    swift = (lab.declared.get("openstack") or {}).get("swift") or {}
    return int(swift.get("replicas", Swift.model_fields["replicas"].default))


def needs_a_second_replica(swift: SwiftLab) -> None:
    if swift.declared < 2:
        pytest.skip(f"the lab declares {swift.declared} replica: no other holder to repair from")


@pytest.fixture(scope="module")
def swift(lab: LabContext, runners: dict[str, Runner]) -> Iterator[SwiftLab]:
    cluster = SwiftLab(lab, runners)
    yield cluster
    for obj in ("first", "second"):
        cluster.tool("delete", obj)


def wait_for(check: Callable[[], bool], budget: float = REPAIR_BUDGET) -> bool:
    deadline = time.monotonic() + budget
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(3.0)
    return True


def test_an_object_has_one_replica_on_each_of_the_declared_number_of_nodes(swift: SwiftLab, evidence: Evidence) -> None:
    put = swift.tool("put", "first", size=1024 * 1024)
    assert put["http"] == 201, f"PUT through the proxy: expected 201, saw {put['http']}"
    where = swift.locate(put["account"], "first")
    holders = [swift.by_ip[n["ip"]] for n in where["nodes"]]
    assert len(holders) == len(set(holders)) == swift.declared, (
        f"the lab declares {swift.declared} replicas; the ring places the object on {holders}"
    )
    for node in holders:
        directory = swift.object_dir(where, swift.nodes[node])
        assert swift.replica_sha(node, directory) == put["sha256"], f"{node}: no replica with the bytes in {directory}"
        evidence(f"replica on {node}", f"{directory}/*.data, sha256 {put['sha256']}")
    assert swift.tool("get", "first")["sha256"] == put["sha256"]


def test_a_lost_replica_is_repaired_by_another_node(swift: SwiftLab, evidence: Evidence) -> None:
    needs_a_second_replica(swift)
    put = swift.tool("put", "first", size=1024 * 1024)
    where = swift.locate(put["account"], "first")
    lost, helper, *_ = [swift.by_ip[n["ip"]] for n in where["nodes"]]
    partition = swift.object_dir(where, swift.nodes[lost]).rsplit("/", 2)[0]
    swift.runners[lost].run(["rm", "-rf", partition], timeout=60)
    directory = swift.object_dir(where, swift.nodes[lost])
    assert swift.replica_sha(lost, directory) is None
    swift.replicate_once(helper)
    repaired = wait_for(lambda: swift.replica_sha(lost, directory) == put["sha256"])
    assert repaired, f"{lost}: replica in {directory} not restored by {helper}'s replicator over br-storage"
    evidence("repaired", f"{lost}: partition removed, replica back in {directory} after {helper}'s replicator ran")


def test_a_dead_object_server_loses_no_write_and_catches_up(swift: SwiftLab, evidence: Evidence) -> None:
    needs_a_second_replica(swift)
    first = swift.tool("put", "first", size=1024 * 1024)
    where = swift.locate(first["account"], "second")
    dead, *alive = [swift.by_ip[n["ip"]] for n in where["nodes"]]
    swift.runners[dead].run(["systemctl", "stop", "swift-object"], timeout=120)
    try:
        put = swift.tool("put", "second", size=512 * 1024)
        assert put["http"] == 201, f"with {dead}'s object server down, PUT should succeed, saw {put['http']}"
        got = swift.tool("get", "second")
        assert got["http"] == 200 and got["sha256"] == put["sha256"], got
    finally:
        swift.runners[dead].run(["systemctl", "start", "swift-object"], timeout=120)
    directory = swift.object_dir(where, swift.nodes[dead])
    for node in alive:
        swift.replicate_once(node)
    caught_up = wait_for(lambda: swift.replica_sha(dead, directory) == put["sha256"])
    assert caught_up, f"{dead}: replica in {directory} not restored after its object server came back"
    evidence("caught up", f"{dead}: replica in {directory} after its object server came back (from {', '.join(alive)})")
