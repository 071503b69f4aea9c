"""Training copies: N isolated copies of one container lab, each made from the original's checkpoint in seconds
rather than built N times, each reset to that checkpoint on its own while the others run.

Why a network namespace per copy, and not new CIDRs: a checkpoint carries the lab's addresses inside every node's
root (keystone's endpoints, Ceph's monmap, the iSCSI and NFS clients' targets, /etc/hosts, cloud-init's
network-config matched by MAC), so a copy restored from it must keep the very same addresses, bridge names and
MACs. Copy k of lab L therefore lives in its own netns `stacklab-L-k` (host/netns.py), which stacklab creates and
owns: the copy's bridges (same names, same host-side addresses) are made inside it with the bridge driver, its
containers are started from inside it (so LXC makes each veth there and attaches it to the netns' bridge), and
nothing of the copy is on the host's network. No route, NAT or firewall rule joins a copy to the host or to
another copy (labs need none: their images carry their packages).

What a copy is. The same lab (same name L, lab file, keys, passwords, Ceph fsid, host keys) with its own state
dir: `<state root>/L/copies/k/L/` (so the engine, whose state dir is `<root>/<lab name>`, runs on it unchanged,
with its own lock and logs), and beside it `copy.json` (this module's record: the netns and its inode, the
checkpoint, timings). The files come from the original's checkpoint `copies` (saved by the first
`up --copies`), copied with reflinks where the file system can, relocated to the copy's dir (checkpoint.py: paths
and the cgroup dir in state.json, ssh_config, the LXC configs). Copy 1 is the original itself (`L` or `L#1`).

Every stacklab operation on a copy (`up --copies`, `reset`, `verify`, `status`, `ssh`, `down`) runs with the
calling thread inside the copy's netns (host/netns.entered): LXC's command socket is an abstract unix socket,
which is per netns, so `lxc-info` from the host says STOPPED for a copy's running container; pyroute2's netlink
socket, paramiko's SSH sockets (stacklab's node runners) and the OpenSSH processes of verify's testinfra are all
born in the netns and reach the copy's nodes at the lab's own addresses. Nothing else changes: the engine, the
drivers and the suites do not know they run in a copy.

Refused: VM nodes (checkpointed, but a copy's nodes are started inside its netns, which a libvirt domain is not;
its taps would join the original's bridges), and kernel implementations whose objects are not per netns (LIO
targets in configfs: two copies would share one target name).

`down L` removes the copies first (each like `down L#k`), then the original: a copy needs the checkpoint it was
made from. `down L#k`: the engine's destroy inside the netns, then the netns itself (only if it is still the
inode recorded), then the leak check of the copy: no netns, no process left in it or naming the copy's dir, no
cgroup dir, mount, loop device or LXC dir of the copy. A copy whose netns is gone (a host reboot empties
/run/netns; its nodes are then stopped) is removed from a new, empty netns of the same name: its nodes by their
driver, the rest forgotten. Never from the host's netns, where the bridges of the same names are the original's.
`reset` of such a copy is refused (down it and make it again).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stacklab.drivers.base import driver_for
from stacklab.drivers.nodes.lxc_config import cgroup_lab_dir
from stacklab.drivers.nodes.lxc_host import cgroup_mounts, container_state
from stacklab.engine.checkpoint import (
    CHECKPOINTS_DIR,
    COPIES_DIR,
    COPY_RECORD,
    CheckpointInfo,
    RestoreResult,
    checkpoints_of,
    fresh_engine,
    restore_lab,
)
from stacklab.engine.core import Engine, RunResult, StepFailure
from stacklab.engine.lab_nodes import lab_nodes
from stacklab.engine.plan import Plan
from stacklab.errors import EXIT_INVALID_LAB, StackLabError
from stacklab.exec.atomic import write_atomic
from stacklab.exec.parallel import each_at_once
from stacklab.exec.readiness import NotReady, ReadinessTimeout, wait_until
from stacklab.exec.runner import Runner
from stacklab.host import netns
from stacklab.model.lab import Lab
from stacklab.plan.resource import Action, Change, Resource

COPY_CHECKPOINT = "copies"
MAX_COPIES = 64
# Copies made side by side by one `up --copies`: each is mostly waits (containers booting, units starting); more at
# once than this only queue on the host's disk and CPU.
AT_ONCE = 4
LEAK_BUDGET = 15.0
# Implementations whose objects live in the host kernel, shared by every netns (role -> implementation).
KERNEL_SHARED = {"iscsi_target": "lio"}
_TARGET_RE = re.compile(r"^(?P<lab>.+?)(?:#(?P<hash>\d+)|-(?P<dash>\d+))$")


class CopyError(StackLabError):
    """A training-copy request that cannot be met (no such copy, VM nodes, a copy that exists): nothing touched."""

    exit_code = EXIT_INVALID_LAB


@dataclass(frozen=True)
class CopyPlace:
    """Where copy `index` of a lab lives: its state root, state dir, record and netns."""

    state_root: Path
    lab: str
    index: int

    @property
    def root(self) -> Path:
        """The copy's state root: the engine's state dir for it is `root / lab`."""
        return self.state_root / self.lab / COPIES_DIR / str(self.index)

    @property
    def lab_dir(self) -> Path:
        return self.root / self.lab

    @property
    def record_path(self) -> Path:
        return self.root / COPY_RECORD

    @property
    def netns(self) -> str:
        return f"stacklab-{self.lab}-{self.index}"

    @property
    def label(self) -> str:
        return f"{self.lab}#{self.index}"

    @property
    def source(self) -> Path:
        """The original's checkpoints."""
        return self.state_root / self.lab / CHECKPOINTS_DIR


@dataclass(frozen=True)
class CopyRecord:
    lab: str
    index: int
    netns: str
    netns_inode: int
    checkpoint: str
    created_at: float
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, place: CopyPlace) -> CopyRecord:
        try:
            data = json.loads(place.record_path.read_text())
            return cls(
                lab=str(data["lab"]),
                index=int(data["index"]),
                netns=str(data["netns"]),
                netns_inode=int(data["netns_inode"]),
                checkpoint=str(data["checkpoint"]),
                created_at=float(data["created_at"]),
                seconds={str(k): float(v) for k, v in data.get("seconds", {}).items()},
            )
        except FileNotFoundError:
            known = ", ".join(p.label for p in copies_of(place.state_root, place.lab)) or "none"
            raise CopyError(f"lab {place.lab} has no copy {place.index}", hint=f"copies: {known}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StackLabError(f"copy record {place.record_path} is unreadable: {exc}") from None

    def save(self, place: CopyPlace) -> None:
        write_atomic(place.record_path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", mode=0o600)


def parse_target(arg: str, state_root: Path) -> tuple[str, int | None]:
    """`L#k` -> (L, k); `L-k` -> (L, k) when L has a copy k and no lab is named `L-k`; else (arg, None).
    `L#1` is the original (k None)."""
    match = _TARGET_RE.match(arg)
    if match is None or arg.endswith((".yml", ".yaml")):
        return arg, None
    lab = match.group("lab")
    if match.group("hash") is not None:
        index = int(match.group("hash"))
    else:
        index = int(match.group("dash"))
        if (state_root / arg / "state.json").exists() or not (CopyPlace(state_root, lab, index).record_path).exists():
            return arg, None
    if index < 1:
        raise CopyError(f"{arg!r}: copies are numbered from 1 (the original) up")
    return lab, (None if index == 1 else index)


def copies_of(state_root: Path, lab: str) -> list[CopyPlace]:
    """The lab's copies that have a record, by number."""
    found = []
    for record in (state_root / lab / COPIES_DIR).glob(f"*/{COPY_RECORD}"):
        if record.parent.name.isdigit():
            found.append(CopyPlace(state_root, lab, int(record.parent.name)))
    return sorted(found, key=lambda p: p.index)


def check_copyable(lab: Lab, choices: Mapping[str, str]) -> None:
    """Refuse, before anything is built, a lab whose copies could not be isolated."""
    vms = sorted(name for name, node in lab.nodes.items() if node.kind != "container")
    if vms:
        raise CopyError(
            f"training copies hold container nodes only; lab {lab.name} has VM nodes {', '.join(vms)}",
            hint="a copy's nodes start inside its own network namespace, which a libvirt domain does not: make a lab "
            "of container nodes for a class (`stacklab checkpoint save/restore` works on this lab itself)",
        )
    shared = [f"{role} {impl}" for role, impl in KERNEL_SHARED.items() if choices.get(role) == impl]
    if shared:
        raise CopyError(
            f"lab {lab.name} uses {', '.join(shared)}, whose objects live in the host kernel and are not per "
            "network namespace: copies would share them",
            hint="pin the userspace implementation (e.g. `storage.iscsi.implementation: tgt`)",
        )


def check_count(copies: int) -> None:
    if not 1 <= copies <= MAX_COPIES:
        raise CopyError(f"--copies {copies}: give 1 to {MAX_COPIES} (1 is the original alone)")


def make_at_once(make: Callable[[CopyPlace], None], places: Sequence[CopyPlace], *, at_once: int = AT_ONCE) -> None:
    """`make` for every copy, `at_once` of them side by side (a thread each: setns(2) is per thread, so each thread
    enters its own copy's netns and what it starts is born there); the first error after all finished.

    Made one at a time, a copy spent most of its 55-63 s waiting (its containers booting, their units starting,
    the replan's SSH round trips), which the copies made beside it share."""
    each_at_once(make, places, at_most=at_once)


# -- make, reset, remove (the caller holds the copy's lock; make/reset/remove run inside the copy's netns) ----------


def prepare(place: CopyPlace, runner: Runner, checkpoint: CheckpointInfo) -> CopyRecord:
    """The copy's netns and its record (first, so a `down` can clean up a copy that failed half-way)."""
    if place.record_path.exists():
        raise CopyError(f"copy {place.label} exists already", hint=f"`stacklab reset {place.label}` restores it")
    if place.root.exists() and any(place.root.iterdir()):
        raise CopyError(f"{place.root} is not empty but has no copy record", hint="remove it by hand")
    place.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    inode = netns.create(runner, place.netns)
    record = CopyRecord(place.lab, place.index, place.netns, inode, checkpoint.name, time.time())
    try:
        record.save(place)
    except BaseException:
        netns.delete(runner, place.netns, inode)
        raise
    return record


@dataclass(frozen=True)
class Started:
    seconds: dict[str, float]
    engine: Engine
    plan: Plan


def materialize_and_start(engine: Engine, place: CopyPlace, checkpoint: str) -> Started:
    """In the copy's netns with its (empty) engine: copy the checkpoint in, make the bridges, start the nodes in
    order, and plan the result with a fresh engine (the caller applies what is left, as `up` would)."""
    store = checkpoints_of(engine, place.source)
    seconds: dict[str, float] = {}
    _info, nodes, copied = store.materialize(checkpoint)
    seconds.update(copied)
    copy_engine = fresh_engine(engine, engine.lab)
    began = time.monotonic()
    with engine.bus.phase("copy-bridges"):
        make_bridges(copy_engine)
    seconds["bridges"] = round(time.monotonic() - began, 2)
    began = time.monotonic()
    with engine.bus.phase("copy-start"):
        store.quiescer.start_all(nodes)
    seconds["start"] = round(time.monotonic() - began, 2)
    began = time.monotonic()
    replanned = fresh_engine(engine, engine.lab)
    with engine.bus.phase("copy-replan"):
        the_plan = replanned.plan()
    seconds["replan"] = round(time.monotonic() - began, 2)
    return Started(seconds, replanned, the_plan)


def make_bridges(engine: Engine) -> None:
    """The lab's bridges as the state records them, made in the current netns by the bridge driver."""
    driver = driver_for("bridge")
    for rid, record in sorted(engine.state.resources.items()):
        if not rid.startswith("bridge/"):
            continue
        resource = Resource(record["kind"], record["name"], record.get("spec", {}), tuple(record.get("deps", ())))
        ctx = engine.ctx
        observed = driver.observe(resource, ctx)
        if observed is not None and observed.owned and not observed.drift:
            continue
        outputs = driver.apply(Change(resource, Action.CREATE, ("training copy",), observed, record), ctx)
        engine.state.record(resource, outputs)


def require(place: CopyPlace) -> CopyRecord:
    """The copy's record, once its netns is known to be the one it recorded (before entering it)."""
    record = CopyRecord.load(place)
    if netns.inode_of(record.netns) != record.netns_inode:
        raise StackLabError(
            f"copy {place.label} has lost its network namespace {record.netns} (a host reboot?)",
            hint=f"remove the copy (`stacklab down {place.label}`) and make it again (`stacklab up --copies`)",
        )
    return record


def reset(
    engine: Engine, place: CopyPlace, record: CopyRecord, reload_lab: Callable[[], Lab] | None = None
) -> tuple[RestoreResult, Engine, Plan]:
    """Restore the copy to the checkpoint it was made from (in its netns, under its lock)."""
    return restore_lab(engine, record.checkpoint, reload_lab, source=place.source)


def renew_netns(place: CopyPlace, runner: Runner) -> CopyRecord:
    """A copy whose netns is gone (a host reboot removes /run/netns): a new, empty netns for its `down`, once no
    process of the copy runs any more (its containers would be running in a netns stacklab can no longer name)."""
    record = CopyRecord.load(place)
    running = [f"{pid} ({_cmdline(Path('/proc'), pid)})" for pid in _pids_naming(str(place.root))]
    if running:
        raise StackLabError(
            f"copy {place.label} lost its netns {record.netns} but its processes still run: {'; '.join(running[:3])}",
            hint="stop its containers by hand (`lxc-stop -k -P <lxcpath> -n <node>`), then `stacklab down` again",
        )
    inode = netns.create(runner, record.netns)  # refuses a netns of that name that is not ours
    renewed = CopyRecord(**{**asdict(record), "netns_inode": inode})
    renewed.save(place)
    return renewed


def destroy_stopped(engine: Engine) -> RunResult:
    """`down` of a copy whose nodes are stopped (after a host reboot): each node removed by its driver (what ran
    inside a node goes with it; its services cannot be asked to stop), the rest forgotten (its bridges went with
    the old netns). Inside the renewed netns: a bridge of the same name on the host is the original's."""
    result = RunResult()
    driver = driver_for("node")
    for rid, record in sorted(engine.state.resources.items()):
        if rid.startswith("node/"):
            try:
                driver.delete(rid, record, engine.ctx)
            except Exception as exc:  # every node is tried; the failures are reported together
                result.failed.append(StepFailure(rid, exc))
                continue
        engine.state.forget(rid)
        result.applied.append(rid)
    return result


def _pids_naming(text: str, proc: Path = Path("/proc")) -> list[int]:
    return [
        int(entry.name)
        for entry in proc.iterdir()
        if entry.name.isdigit() and int(entry.name) != os.getpid() and text in _cmdline(proc, int(entry.name))
    ]


def remove_netns(place: CopyPlace, runner: Runner) -> None:
    """After the copy's resources are gone: the netns (if still ours), then wait for its processes to exit."""
    record = CopyRecord.load(place)
    netns.delete(runner, place.netns, record.netns_inode)


def leaks(place: CopyPlace, inode: int, *, budget: float = LEAK_BUDGET) -> list[str]:
    """What the removed copy left on the host (empty: nothing). Waits up to `budget` for exiting processes."""
    found: list[str] = []
    cgroup_dir = cgroup_lab_dir(place.lab, Path(os.path.abspath(place.lab_dir / "lxc")))

    def clean() -> bool:
        found[:] = leftovers(place, inode, cgroup_dir)
        if found:
            raise NotReady(f"{len(found)} objects still present")
        return True

    try:
        wait_until(clean, budget=budget, interval=0.5, what=f"copy {place.label}'s objects to disappear")
    except ReadinessTimeout:
        return found
    return []


def leftovers(place: CopyPlace, inode: int, cgroup_dir: str, proc: Path = Path("/proc")) -> list[str]:
    out = []
    if netns.exists(place.netns):
        out.append(f"netns {place.netns}")
    root = str(place.root)
    for pid in netns.pids_in(inode, proc):
        out.append(f"process {pid} ({_cmdline(proc, pid)}) in the copy's netns")
    out += [f"process {pid} ({_cmdline(proc, pid)})" for pid in _pids_naming(root, proc)]
    for mount in cgroup_mounts():
        if (mount / cgroup_dir).exists():
            out.append(f"cgroup {mount / cgroup_dir}")
    try:
        mountinfo = (proc / "self" / "mountinfo").read_text()
    except OSError:
        mountinfo = ""
    out += [f"mount {line.split()[4]}" for line in mountinfo.splitlines() if root in line]
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if root in backing.read_text():
                out.append(f"loop device /dev/{backing.parent.parent.name} on {backing.read_text().strip()}")
        except OSError:
            continue
    if (place.lab_dir / "lxc").exists():
        out.append(f"lxc dir {place.lab_dir / 'lxc'}")
    return out


def _cmdline(proc: Path, pid: int) -> str:
    try:
        return (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def forget(place: CopyPlace) -> None:
    """The copy's files, once the copy is removed and its leak check is clean (its logs go with it)."""
    shutil.rmtree(place.root, ignore_errors=True)
    copies_dir = place.root.parent
    if copies_dir.is_dir() and not any(copies_dir.iterdir()):
        copies_dir.rmdir()


# -- status --------------------------------------------------------------------------------------------------------


def node_states(place: CopyPlace, runner: Runner, resources: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Each node's LXC state (call inside the copy's netns: LXC's command sockets are per netns)."""
    states = {}
    for node in lab_nodes(resources):
        if node.lxcpath is None:
            states[node.name] = node.kind
            continue
        state, _pid = container_state(runner, node.layout)
        states[node.name] = state.lower()
    return states


def summary(place: CopyPlace) -> dict[str, Any]:
    """What `status L` shows of a copy without entering it: record, netns, size on disk."""
    try:
        record = CopyRecord.load(place)
    except StackLabError as exc:
        return {"copy": place.label, "error": str(exc)}
    return {
        "copy": place.label,
        "netns": record.netns,
        "netns_present": netns.inode_of(record.netns) == record.netns_inode,
        "checkpoint": record.checkpoint,
        "created_at": record.created_at,
        "seconds": record.seconds,
        "state_dir": str(place.lab_dir),
    }


def record_seconds(place: CopyPlace, seconds: Mapping[str, float]) -> None:
    record = CopyRecord.load(place)
    CopyRecord(**{**asdict(record), "seconds": {**record.seconds, **seconds}}).save(place)
