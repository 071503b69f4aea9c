"""Ceph driver (packages and cephadm) against three fake nodes: FakeRunners backed by a small cluster model.

Each node's FakeRunner answers through one responder that keeps the state a real node would (files, units,
mon stores) and a shared cluster (quorum, OSDs, pools, auth), so apply/observe/diff/delete are tested end to
end, including "a second apply changes nothing". The cephadm path is only proven here: it cannot run on the
CI host (no systemd as PID 1, hybrid cgroups).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stacklab.drivers.base import DriverContext, driver_for
from stacklab.drivers.storage.ceph.cluster import Waiter, client_secret_name
from stacklab.drivers.storage.ceph.driver import CephDriver
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.fake import FakeRunner, UnexpectedCommand
from stacklab.exec.runner import CommandResult
from stacklab.model.load import load_lab_text
from stacklab.plan.resource import Action, Resource

NODES = ("storage1", "storage2", "storage3")
LAB_YAML = """
name: aio
networks:
  mgmt: {bridge: br-mgmt, cidr: 172.29.236.0/24}
  storage: {bridge: br-storage, cidr: 172.29.244.0/24}
images:
  storage: {recipe: storage}
nodes:
""" + "".join(
    f"""  {n}:
    image: storage
    nics:
      mgmt: {{address: 172.29.236.2{i}}}
      storage: {{address: 172.29.244.2{i}}}
"""
    for i, n in enumerate(NODES, 1)
)

MUTATING = {"install", "monmaptool", "ceph-mon", "ceph-osd", "truncate", "chown", "rm", "rbd", "pvcreate",
            "vgcreate", "lvcreate", "losetup", "cephadm"}  # fmt: skip
MUTATING_CEPH = {"new", "create", "add", "import", "purge", "apply", "getmap"}


def spec(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "implementation": "packages",
        "mons": {n: f"172.29.244.2{i}" for i, n in enumerate(NODES, 1)},
        "mgrs": ["storage1"],
        "osds": [{"node": n, "count": 1, "size_mib": 4096} for n in NODES],
        "pools": ["volumes", "images", "vms"],
        "clients": ["cinder", "glance", "nova"],
        "replicas": 3,
        "public_network": "172.29.244.0/24",
    }
    out.update(overrides)
    return out


def ok(stdout: str = "", rc: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult((), rc, stdout, stderr, 0.0)


@dataclass
class InputFakeRunner(FakeRunner):
    """A FakeRunner that also remembers the stdin of the command being answered."""

    inputs: list[str | None] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True, input: str | None = None,
            env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> CommandResult:  # fmt: skip
        self.inputs.append(input)
        return super().run(argv, timeout=timeout, check=check, input=input, env=env, cwd=cwd)


@dataclass
class FakeNode:
    name: str
    files: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    enabled: set[str] = field(default_factory=set)


class FakeCluster:
    """The state of three lab nodes and their Ceph cluster, answering argv like the real tools would."""

    def __init__(self, *, health: str = "HEALTH_OK", checks: dict[str, Any] | None = None,
                 hybrid_cgroups: bool = False) -> None:  # fmt: skip
        self.nodes = {n: FakeNode(n) for n in NODES}
        self.runners: dict[str, InputFakeRunner] = {}
        for n in NODES:
            runner = InputFakeRunner()
            runner.expect((), responder=functools.partial(self.respond, n))
            self.runners[n] = runner
        self.monmap: list[str] = []  # mons that have joined
        self.osds: dict[int, str | None] = {}
        self.pools: list[str] = []
        self.auth: dict[str, tuple[str, dict[str, str]]] = {}
        self.health, self.checks = health, checks or {}
        self.hybrid_cgroups = hybrid_cgroups
        self.orch_hosts: list[str] = []
        self.lvs: set[tuple[str, str]] = set()
        self.key_serial = 0
        self.fail_osd_mkfs = False
        self.log: list[tuple[str, ...]] = []  # every command on every node, in order

    # --- helpers for tests ---

    def calls(self, node: str | None = None) -> list[tuple[str, ...]]:
        nodes = [node] if node else list(NODES)
        return [c for n in nodes for c in self.runners[n].calls]

    def mutations(self) -> list[tuple[str, ...]]:
        out = []
        for call in self.log:
            if call[0] == "install" and "-d" in call:
                continue
            if call[0] in MUTATING or (call[0] == "ceph" and MUTATING_CEPH & set(call)):
                out.append(call)
            if call[0] == "systemctl" and call[1] in {"start", "restart", "disable"}:
                out.append(call)
        return out

    def quorum(self) -> list[str]:
        return sorted(m for m in self.monmap if f"ceph-mon@{m}" in self.nodes[m].running)

    # --- the model ---

    def respond(self, node: str, argv: tuple[str, ...]) -> CommandResult:
        st = self.nodes[node]
        stdin = self.runners[node].inputs[-1]
        self.log.append(argv)
        cmd = argv[0]
        if cmd == "sha256sum":
            if argv[1] not in st.files:
                return ok(rc=1, stderr="No such file")
            return ok(f"{hashlib.sha256(st.files[argv[1]].encode()).hexdigest()}  {argv[1]}\n")
        if cmd == "install":
            if "-d" in argv:
                st.dirs.add(argv[-1])
            elif "/dev/stdin" in argv:
                assert stdin is not None
                st.files[argv[-1]] = stdin
            else:
                st.files[argv[-1]] = ""
            return ok()
        if cmd == "cat":
            return ok(st.files[argv[1]]) if argv[1] in st.files else ok(rc=1, stderr="No such file")
        if cmd == "test":
            path = argv[2]
            return ok(rc=0 if path in st.files or path in st.dirs else 1)
        if cmd in {"chown", "truncate", "pvcreate", "vgcreate"}:
            return ok()
        if cmd == "rm":
            for path in argv[1:]:
                if path.startswith("-"):
                    continue
                st.files = {p: v for p, v in st.files.items() if p != path and not p.startswith(path + "/")}
                st.dirs = {d for d in st.dirs if d != path and not d.startswith(path + "/")}
            return ok()
        if cmd == "find":
            base = argv[1]
            names = sorted({d[len(base) + 1 :].split("/")[0] for d in st.dirs if d.startswith(base + "/")})
            return ok("".join(f"{n}\n" for n in names if n.startswith("ceph-")))
        if cmd == "ceph-authtool":
            self.key_serial += 1
            return ok(base64.b64encode(f"key{self.key_serial}".encode().ljust(28, b".")).decode() + "\n")
        if cmd == "monmaptool":
            st.files[argv[-1]] = "monmap"
            return ok()
        if cmd == "ceph-mon":
            mon = argv[argv.index("-i") + 1]
            st.dirs.add(f"/var/lib/ceph/mon/ceph-{mon}/store.db")
            return ok()
        if cmd == "ceph-osd":
            if self.fail_osd_mkfs:
                return ok(rc=1, stderr="bluestore mkfs failed")
            return ok()
        if cmd == "systemctl":
            return self._systemctl(st, argv[1:])
        if cmd == "ceph":
            return self._ceph(node, list(argv[1:]), stdin)
        if cmd == "rbd":
            assert argv[1:3] == ("pool", "init") and argv[3] in self.pools
            return ok()
        return self._other(st, argv)

    def _systemctl(self, st: FakeNode, args: tuple[str, ...]) -> CommandResult:
        if args[0] == "enable" and args[1] == "--now":
            st.enabled.add(args[2])
            st.running.add(args[2])
            kind, _, ident = args[2].partition("@")
            if kind == "ceph-mon" and ident not in self.monmap:
                assert f"/var/lib/ceph/mon/ceph-{ident}/done" in st.files, "mon started before its mkfs"
                self.monmap.append(ident)
            return ok()
        if args[0] == "enable":
            return ok()
        if args[0] == "disable" and args[1] == "--now":
            for unit in args[2:]:
                st.enabled.discard(unit)
                st.running.discard(unit)
            return ok()
        raise UnexpectedCommand(f"systemctl {args}")

    def _ceph(self, node: str, args: list[str], stdin: str | None) -> CommandResult:
        if args[:2] == ["--connect-timeout", "20"]:
            args = args[2:]
        if args[:4] == ["--name", "client.bootstrap-osd", "--keyring", "/var/lib/ceph/bootstrap-osd/ceph.keyring"]:
            args = args[4:]
        fmt = args[-2:] == ["--format", "json"]
        if fmt:
            args = args[:-2]
        if not self.quorum():
            return ok(rc=1, stderr="[errno 110] RADOS timed out (error connecting to the cluster)")
        up = [i for i, host in self.osds.items() if host and f"ceph-osd@{i}" in self.nodes[host].running]
        answers: dict[str, Any] = {
            "quorum_status": {"quorum_names": self.quorum()},
            "mon dump": {"mons": [{"name": m} for m in self.monmap]},
            "osd ls": sorted(self.osds),
            "osd pool ls": self.pools,
            "auth ls": {"auth_dump": [{"entity": e, "key": k, "caps": c} for e, (k, c) in self.auth.items()]},
            "osd stat": {"num_osds": len(self.osds), "num_up_osds": len(up), "num_in_osds": len(up)},
            "health detail": {"status": self.health, "checks": self.checks},
            "orch host ls": [{"hostname": h} for h in self.orch_hosts],
        }
        answers["status"] = {
            "fsid": "x",
            "health": {"status": self.health},
            "quorum_names": self.quorum(),
            "osdmap": answers["osd stat"],
        }
        hosts: dict[str, list[int]] = {}
        for i, host in self.osds.items():
            if host:
                hosts.setdefault(host, []).append(i)
        answers["osd tree"] = {
            "nodes": [{"id": -1, "name": "default", "type": "root"}]
            + [{"id": -2 - k, "name": h, "type": "host", "children": ids} for k, (h, ids) in enumerate(hosts.items())]
        }
        key = " ".join(args)
        if not args and stdin is not None:  # interactive mode: a command a line; one that fails prints nothing
            assert fmt, "ceph's interactive mode without --format json"
            return ok("".join(json.dumps(answers[line]) + "\n" for line in stdin.splitlines() if line in answers))
        if key in answers:
            assert fmt, f"ceph {key} without --format json"
            return ok(json.dumps(answers[key]))
        if args[:2] == ["mon", "getmap"]:
            self.nodes[node].files[args[3]] = "monmap"
            return ok()
        if args[:2] == ["auth", "import"]:
            assert stdin is not None
            lines = stdin.splitlines()
            entity = lines[0].strip("[]")
            secret = lines[1].split(" = ")[1]
            caps = {ln.split()[1]: ln.split(" = ", 1)[1].strip('"') for ln in lines[2:]}
            self.auth[entity] = (secret, caps)
            return ok()
        if args[:2] == ["osd", "new"]:
            assert stdin is not None and "cephx_secret" in stdin
            new_id = len(self.osds)
            self.osds[new_id] = None
            return ok(f"{new_id}\n")
        if args[:3] == ["osd", "crush", "add"]:
            self.osds[int(args[3].removeprefix("osd."))] = args[-1].removeprefix("host=")
            return ok()
        if args[:2] == ["osd", "purge"]:
            self.osds.pop(int(args[2]), None)
            return ok()
        if args[:3] == ["osd", "pool", "create"]:
            self.pools.append(args[3])
            return ok()
        if args[:3] == ["orch", "host", "add"]:
            self.orch_hosts.append(args[3])
            return ok()
        if args[:2] == ["orch", "apply"]:
            for n in NODES:
                self.nodes[n].running.add(f"ceph-mon@{n}")
                if n not in self.monmap:
                    self.monmap.append(n)
                osd_id = len(self.osds)
                self.osds[osd_id] = n
                self.nodes[n].running.add(f"ceph-osd@{osd_id}")
            return ok()
        if args == ["config", "generate-minimal-conf"]:
            return ok("[global]\n\tfsid = x\n")
        if args[:3] == ["mgr", "module", "disable"]:
            return ok()
        raise UnexpectedCommand(f"ceph {key}")

    def _other(self, st: FakeNode, argv: tuple[str, ...]) -> CommandResult:
        """cephadm path: preflight probes, bootstrap, loop-backed LVs, rm-cluster."""
        cmd = argv[0]
        if cmd == "podman":
            return ok("1\n")
        if cmd == "stat":
            return ok("tmpfs\n" if self.hybrid_cgroups else "cgroup2fs\n")
        if cmd == "which":
            return ok("/usr/sbin/cephadm\n")
        if cmd == "lvs":
            return ok(rc=0 if (st.name, argv[1]) in self.lvs else 5)
        if cmd == "losetup":
            if "--find" in argv:
                return ok("/dev/loop7\n")
            if "-j" in argv:
                return ok("/dev/loop7\n")
            return ok()
        if cmd == "lvcreate":
            self.lvs.add((st.name, f"{argv[-1]}/osd"))
            return ok()
        if cmd == "vgremove":
            self.lvs.discard((st.name, f"{argv[-1]}/osd"))
            return ok()
        if cmd == "cephadm" and argv[1] == "bootstrap":
            fsid = argv[argv.index("--fsid") + 1]
            st.files["/etc/ceph/ceph.conf"] = f"[global]\n\tfsid = {fsid}\n"
            st.files["/etc/ceph/ceph.client.admin.keyring"] = "[client.admin]\n\tkey = x\n"
            st.files["/etc/ceph/ceph.pub"] = "ssh-ed25519 AAAAcephadm ceph-x\n"
            st.running.add(f"ceph-mon@{st.name}")
            self.monmap.append(st.name)
            self.orch_hosts.append(st.name)
            return ok()
        if cmd == "cephadm" and argv[1] == "rm-cluster":
            st.running.clear()
            for p in [p for p in st.files if p.startswith("/etc/ceph/ceph.c")]:
                del st.files[p]
            return ok()
        raise UnexpectedCommand(f"{st.name}: {' '.join(argv)}")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def cluster() -> FakeCluster:
    cluster = FakeCluster()
    for n in NODES:
        # /proc/1/comm on every node: systemd is PID 1 inside the lab's system containers
        cluster.nodes[n].files["/proc/1/comm"] = "systemd\n"
    return cluster


def make_ctx(cluster: FakeCluster, tmp_path: Path) -> DriverContext:
    lab = load_lab_text(LAB_YAML)
    return DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path, node_runner=lambda n: cluster.runners[n])


def make_driver() -> tuple[CephDriver, FakeClock]:
    clock = FakeClock()
    serial = iter(range(1000))
    driver = CephDriver(waiter=Waiter(clock=clock, sleep=clock.sleep), new_uuid=lambda: f"uuid-{next(serial)}")
    return driver, clock


def converge(driver: CephDriver, ctx: DriverContext, resource: Resource,
             recorded: Mapping[str, Any] | None = None) -> tuple[Action, Mapping[str, Any] | None]:  # fmt: skip
    change = driver.diff(resource, driver.observe(resource, ctx), recorded)
    if change.action is Action.NOOP:
        return change.action, None
    return change.action, driver.apply(change, ctx)


def record(resource: Resource, outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": resource.kind, "name": resource.name, "hash": resource.hash, "spec": dict(resource.spec),
            "outputs": dict(outputs)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# packages


def test_registered() -> None:
    assert isinstance(driver_for("ceph"), CephDriver)


def test_packages_apply_builds_the_cluster(cluster: FakeCluster, tmp_path: Path) -> None:
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec())
    action, outputs = converge(driver, ctx, resource)
    assert action is Action.CREATE
    assert outputs is not None
    fsid = (tmp_path / "secrets" / "ceph-fsid").read_text().strip()
    assert outputs["fsid"] == fsid
    assert outputs["health"] == "HEALTH_OK"
    assert outputs["conf_path"] == "/etc/ceph/ceph.conf"
    assert outputs["clients"] == {c: client_secret_name(c) for c in ("cinder", "glance", "nova")}
    assert outputs["mon_host"].startswith("[v2:172.29.244.21:3300,v1:172.29.244.21:6789],")

    # one monmap, made on the first mon; the others fetch it and join
    assert [c for c in cluster.calls() if c[0] == "monmaptool"] == [
        c for c in cluster.calls("storage1") if c[0] == "monmaptool"
    ]
    for n in ("storage2", "storage3"):
        assert any(c[-4:-2] == ("mon", "getmap") for c in cluster.calls(n))
    assert cluster.quorum() == list(NODES)
    # OSDs: one per node, crush location pinned to the node
    assert cluster.osds == {0: "storage1", 1: "storage2", 2: "storage3"}
    crush = [c for c in cluster.calls() if "crush" in c]
    assert [c[-1] for c in crush] == ["host=storage1", "host=storage2", "host=storage3"]
    assert all(c[-2] == "root=default" for c in crush)
    assert cluster.pools == ["volumes", "images", "vms"]
    assert {"client.cinder", "client.glance", "client.nova", "mgr.storage1"} <= set(cluster.auth)
    assert "profile rbd-read-only pool=images" in cluster.auth["client.cinder"][1]["osd"]
    for n in NODES:
        node = cluster.nodes[n]
        assert f"ceph-mon@{n}" in node.enabled
        assert "fsid = " + fsid in node.files["/etc/ceph/ceph.conf"]
        assert f"crush_location = root=default host={n}" in node.files["/etc/ceph/ceph.conf"]
        assert "/var/lib/ceph/bootstrap-osd/ceph.keyring" in node.files
    assert "ceph-mgr@storage1" in cluster.nodes["storage1"].enabled

    # secrets: mode 0600, and never on a command line
    secrets = {p.name: p for p in (tmp_path / "secrets").iterdir()}
    assert {"ceph-fsid", "ceph-mon.key", "ceph-client.admin.key", "ceph-client.cinder.key"} <= set(secrets)
    assert all(os.stat(p).st_mode & 0o777 == 0o600 for p in secrets.values())
    keys = [p.read_text().strip() for name, p in secrets.items() if name.endswith(".key")]
    assert not [c for c in cluster.calls() if any(k in " ".join(c) for k in keys)]
    # keyrings are written through stdin with install, mode 0600
    writes = [c for c in cluster.calls("storage1") if c[-1] == "/etc/ceph/ceph.client.admin.keyring"]
    assert writes and writes[-1][:3] == ("install", "-D", "-m") and writes[-1][3] == "0600"


def test_packages_second_apply_changes_nothing(cluster: FakeCluster, tmp_path: Path) -> None:
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec())
    _, outputs = converge(driver, ctx, resource)
    assert outputs is not None
    recorded = record(resource, outputs)

    before = len(cluster.mutations())
    action, _ = converge(driver, ctx, resource, recorded)
    assert action is Action.NOOP
    assert len(cluster.mutations()) == before

    # even a forced apply (the engine re-applying) changes nothing on a converged cluster
    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.drift == ()
    change = driver.diff(resource, observed, None)  # owned but unrecorded: adopt
    assert change.action is Action.UPDATE
    driver.apply(change, ctx)
    assert cluster.mutations()[before:] == []


def test_packages_observe_and_diff(cluster: FakeCluster, tmp_path: Path) -> None:
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec())
    assert driver.observe(resource, ctx) is None
    _, outputs = converge(driver, ctx, resource)
    assert outputs is not None
    recorded = record(resource, outputs)

    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.owned
    assert observed.facts["mons"] == list(NODES)
    assert observed.facts["osds_by_host"] == {"storage1": [0], "storage2": [1], "storage3": [2]}

    # a missing pool -> update, and the update only creates that pool
    cluster.pools.remove("vms")
    change = driver.diff(resource, driver.observe(resource, ctx), recorded)
    assert change.action is Action.UPDATE and change.reasons == ("drift: pool vms missing",)
    before = len(cluster.mutations())
    driver.apply(change, ctx)
    assert [c[:5] for c in cluster.mutations()[before:]] == [
        ("ceph", "--connect-timeout", "20", "osd", "pool"),
        ("rbd", "pool", "init", "vms"),
    ]

    # a new pool in the spec is updated in place
    bigger = Resource("ceph", "aio", spec(pools=["volumes", "images", "vms", "backups"]))
    assert driver.diff(bigger, driver.observe(bigger, ctx), recorded).action is Action.UPDATE

    # a different mon set -> replace
    fewer = Resource("ceph", "aio", spec(mons={"storage1": "172.29.244.21"}))
    change = driver.diff(fewer, driver.observe(fewer, ctx), recorded)
    assert change.action is Action.REPLACE and "monitors" in change.reasons[0]

    # more OSDs -> update; fewer replicas -> replace
    more = spec(osds=[{"node": n, "count": 2, "size_mib": 4096} for n in NODES])
    assert driver.diff(Resource("ceph", "aio", more), observed, recorded).action is Action.UPDATE
    assert driver.diff(Resource("ceph", "aio", spec(replicas=2)), observed, recorded).action is Action.REPLACE


def test_observe_reads_the_cluster_in_one_ceph_process(cluster: FakeCluster, tmp_path: Path) -> None:
    """A no-op `up` waited on five `ceph` start-ups one after the other (3-12 s under load): they are one
    process now, its commands on stdin, and what it finds is the same (a lost pool is still drift)."""
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec())
    _, outputs = converge(driver, ctx, resource)
    assert outputs is not None
    runner = cluster.runners["storage1"]
    before = len(runner.calls)
    observed = driver.observe(resource, ctx)
    ceph = [c for c in runner.calls[before:] if c[0] == "ceph"]
    assert ceph == [("ceph", "--connect-timeout", "20", "--format", "json")]
    assert runner.inputs[-1] == "status\nmon dump\nosd tree\nosd pool ls\nauth ls\n"
    assert observed is not None and observed.drift == ()
    assert observed.facts["mons"] == list(NODES) and observed.facts["pools"] == ["volumes", "images", "vms"]
    assert observed.facts["clients"] == ["cinder", "glance", "nova"]
    cluster.pools.remove("vms")
    assert driver.observe(resource, ctx).drift == ("pool vms missing",)  # type: ignore[union-attr]
    for mon in NODES:  # no quorum: the batch fails, `status` alone says why
        cluster.nodes[mon].running.discard(f"ceph-mon@{mon}")
    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.facts["reachable"] is False
    assert observed.drift == ("the cluster does not answer on storage1: [errno 110] RADOS timed out (error "
                              "connecting to the cluster)",)  # fmt: skip


def test_ceph_batch_is_trusted_only_whole(tmp_path: Path) -> None:
    """ceph's interactive mode prints nothing and exits 0 for a command that fails: fewer documents than commands,
    a non-zero exit or text that is not JSON gives None, and the caller asks one by one."""
    from stacklab.drivers.storage.ceph.cluster import CephAdmin

    commands = (("status",), ("osd", "pool", "ls"))
    for stdout, rc, expected in (
        ('{"fsid": "x"}\n["volumes"]\n', 0, [{"fsid": "x"}, ["volumes"]]),
        ('{"fsid": "x"}\n', 0, None),
        ("", 1, None),
        ('{"fsid": "x"}\nno valid command found\n', 0, None),
    ):
        runner = FakeRunner().expect(["ceph", "--connect-timeout", "20", "--format", "json"], stdout=stdout, rc=rc)
        assert CephAdmin(runner, "ceph/aio").json_batch(*commands) == expected


def test_packages_adds_osds_in_place(cluster: FakeCluster, tmp_path: Path) -> None:
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec())
    _, outputs = converge(driver, ctx, resource)
    assert outputs is not None
    more = Resource("ceph", "aio", spec(osds=[*spec()["osds"], {"node": "storage2", "count": 1, "size_mib": 2048}]))
    action, _ = converge(driver, ctx, more, record(resource, outputs))
    assert action is Action.UPDATE
    assert cluster.osds == {0: "storage1", 1: "storage2", 2: "storage3", 3: "storage2"}
    assert any(c[:3] == ("truncate", "-s", "2048M") for c in cluster.calls("storage2"))


def test_foreign_ceph_conf_is_never_touched(cluster: FakeCluster, tmp_path: Path) -> None:
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    cluster.nodes["storage1"].files["/etc/ceph/ceph.conf"] = "[global]\nfsid = 11111111-2222\n"
    resource = Resource("ceph", "aio", spec())
    observed = driver.observe(resource, ctx)
    assert observed is not None and not observed.owned
    with pytest.raises(PlanError, match="not owned"):
        driver.diff(resource, observed, None)


def test_bad_spec_is_a_plan_error(cluster: FakeCluster, tmp_path: Path) -> None:
    driver, _ = make_driver()
    resource = Resource("ceph", "aio", spec(osds=[{"node": "storage1", "count": 1, "size_mib": 4096}]))
    with pytest.raises(PlanError, match="cannot hold 3 replicas"):
        driver.diff(resource, None, None)


def test_health_budget_names_what_it_waited_for(tmp_path: Path) -> None:
    cluster = FakeCluster(
        health="HEALTH_WARN",
        checks={"MON_DISK_LOW": {"severity": "HEALTH_WARN", "summary": {"message": "mon storage1 is low"}}},
    )
    driver, clock = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec())
    with pytest.raises(StackLabError, match=r"waited 300s for HEALTH_OK; last seen: HEALTH_WARN: MON_DISK_LOW"):
        driver.apply(driver.diff(resource, None, None), ctx)
    assert clock.now >= 300


def test_accepted_warning_passes_only_when_intended(tmp_path: Path) -> None:
    checks = {"POOL_NO_REDUNDANCY": {"severity": "HEALTH_WARN", "summary": {"message": "3 pool(s) have no replicas"}}}
    cluster = FakeCluster(health="HEALTH_WARN", checks=checks)
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec(replicas=1))
    outputs = driver.apply(driver.diff(resource, None, None), ctx)
    assert outputs["health"] == "HEALTH_WARN"


def test_failed_osd_is_purged(cluster: FakeCluster, tmp_path: Path) -> None:
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    cluster.fail_osd_mkfs = True
    resource = Resource("ceph", "aio", spec())
    with pytest.raises(StackLabError, match="bluestore mkfs failed"):
        driver.apply(driver.diff(resource, None, None), ctx)
    assert cluster.osds == {}
    assert not [d for d in cluster.nodes["storage1"].dirs if d.startswith("/var/lib/ceph/osd/")]
    # resume: the next apply finishes the cluster
    cluster.fail_osd_mkfs = False
    outputs = driver.apply(driver.diff(resource, driver.observe(resource, ctx), None), ctx)
    assert outputs["health"] == "HEALTH_OK" and len(cluster.osds) == 3


def test_packages_delete(cluster: FakeCluster, tmp_path: Path) -> None:
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec())
    _, outputs = converge(driver, ctx, resource)
    assert outputs is not None
    recorded = record(resource, outputs)
    driver.delete(resource.id, recorded, ctx)
    for n in NODES:
        node = cluster.nodes[n]
        assert node.running == set() and node.enabled == set()
        assert not [p for p in node.files if "ceph" in p], node.files
        assert not [d for d in node.dirs if d.startswith("/var/lib/ceph/") and "/ceph-" in d]
    disables = [c for c in cluster.log if c[:2] == ("systemctl", "disable")]
    assert [c[3].split("@")[0] for c in disables] == ["ceph-osd"] * 3 + ["ceph-mgr"] + ["ceph-mon"] * 3
    assert driver.observe(resource, ctx) is None
    driver.delete(resource.id, recorded, ctx)  # already gone: still succeeds
    driver.delete(resource.id, {}, ctx)


def test_replace_deletes_then_rebuilds_with_the_same_fsid(cluster: FakeCluster, tmp_path: Path) -> None:
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec())
    _, outputs = converge(driver, ctx, resource)
    assert outputs is not None
    smaller = Resource("ceph", "aio", spec(replicas=2))
    change = driver.diff(smaller, driver.observe(smaller, ctx), record(resource, outputs))
    assert change.action is Action.REPLACE
    cluster.monmap.clear()
    cluster.osds.clear()
    cluster.pools.clear()
    new_outputs = driver.apply(change, ctx)
    assert new_outputs["fsid"] == outputs["fsid"]
    assert "osd_pool_default_size = 2" in cluster.nodes["storage1"].files["/etc/ceph/ceph.conf"]


# ---------------------------------------------------------------------------------------------------------
# cephadm (FakeRunner only: cannot run on the CI host)


def test_cephadm_refuses_hybrid_cgroups_naming_packages(tmp_path: Path) -> None:
    cluster = FakeCluster(hybrid_cgroups=True)
    for n in NODES:
        cluster.nodes[n].files["/proc/1/comm"] = "systemd\n"
        cluster.nodes[n].dirs.add("/sys/fs/cgroup/unified")
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec(implementation="cephadm"))
    with pytest.raises(PlanError, match="hybrid") as err:
        driver.observe(resource, ctx)
    assert "implementation: packages" in str(err.value)
    assert not cluster.mutations()


def test_cephadm_refuses_without_systemd(tmp_path: Path) -> None:
    cluster = FakeCluster()
    cluster.nodes["storage1"].files["/proc/1/comm"] = "bash\n"
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    with pytest.raises(PlanError, match="PID 1 is bash"):
        driver.observe(Resource("ceph", "aio", spec(implementation="cephadm")), ctx)


def test_cephadm_apply_observe_delete(cluster: FakeCluster, tmp_path: Path) -> None:
    driver, _ = make_driver()
    ctx = make_ctx(cluster, tmp_path)
    resource = Resource("ceph", "aio", spec(implementation="cephadm"))
    action, outputs = converge(driver, ctx, resource)
    assert action is Action.CREATE and outputs is not None
    fsid = (tmp_path / "secrets" / "ceph-fsid").read_text().strip()
    assert outputs["fsid"] == fsid and outputs["implementation"] == "cephadm"

    boot = [c for c in cluster.calls("storage1") if c[:2] == ("cephadm", "bootstrap")]
    assert len(boot) == 1
    argv = boot[0]
    assert argv[argv.index("--mon-ip") + 1] == "172.29.244.21"
    assert argv[argv.index("--fsid") + 1] == fsid
    assert "--skip-monitoring-stack" in argv and "--single-host-defaults" not in argv
    assert "/etc/stacklab/ceph/bootstrap.conf" in cluster.nodes["storage1"].files
    for n in ("storage2", "storage3"):
        assert "ssh-ed25519 AAAAcephadm ceph-x" in cluster.nodes[n].files["/root/.ssh/authorized_keys"]
    adds = [c[-2:] for c in cluster.calls("storage1") if c[3:6] == ("orch", "host", "add")]
    assert adds == [("storage2", "172.29.244.22"), ("storage3", "172.29.244.23")]
    services = cluster.nodes["storage1"].files["/etc/stacklab/ceph/services.yml"]
    assert "storage2:172.29.244.22" in services and "/dev/stacklab-ceph-0/osd" in services
    assert any(c[:2] == ("lvcreate", "--yes") for c in cluster.calls("storage3"))
    assert cluster.pools == ["volumes", "images", "vms"]

    # second round: nothing to do
    before = len(cluster.mutations())
    action, _ = converge(driver, ctx, resource, record(resource, outputs))
    assert action is Action.NOOP
    assert len(cluster.mutations()) == before

    driver.delete(resource.id, record(resource, outputs), ctx)
    for n in NODES:
        assert any(c[:2] == ("cephadm", "rm-cluster") and fsid in c for c in cluster.calls(n))
        assert "/etc/ceph/ceph.conf" not in cluster.nodes[n].files
    assert "AAAAcephadm" not in cluster.nodes["storage2"].files["/root/.ssh/authorized_keys"]
    assert any(c[:2] == ("losetup", "-d") for c in cluster.calls("storage1"))
