"""Checkpoints: a whole-lab snapshot (every node's root, node-local data, the lab's state) saved and restored.

What a checkpoint holds: a copy of the lab's state directory minus its history (`logs/`, `verify/`, the lock and
the checkpoints themselves). That is
  state.json, secrets/, ssh/, known_hosts, exports   what stacklab recorded: resources, keys, passwords, cephx
                                                     keys, the Ceph fsid, CHAP secrets, the nodes' host keys
  lxc/<node>/                                        each container node whole: its config, its overlay upper
                                                     dir (delta0/: everything the node wrote over the image,
                                                     i.e. MariaDB's and RabbitMQ's data, keystone's fernet keys,
                                                     Ceph's mon store and OSD block files, Swift's devices,
                                                     iSCSI file LUNs, NFS exports) and the overlay's work dir
  vm/pool/                                           each VM node's qcow2 files: its root overlay (everything
                                                     the guest wrote over the base disk), its data disks and its
                                                     cloud-init seed; `vm/<node>/` without the console log
In container nodes every storage driver keeps its data inside the node (`/var/lib/ceph/osd/*/block`,
`/srv/node`, `/srv/iscsi`, `/srv/nfs`), so the upper dir is the node's data; the image rootfs below it is shared,
cached by content hash and never written, so the checkpoint records its path and restore checks it is still
there. The same holds for a VM's root overlay and the cached base disk it is backed by (`vm-<hash>/base.qcow2`
beside the image rootfs). A VM's libvirt domain is not saved: it names the same files, MACs and taps before and
after, so a restore puts the files back and starts the domain as it is defined. Training copies (materialize)
stay container-only: a copy's nodes are started inside its network namespace, which a libvirt domain is not.

Consistency: the nodes are stopped cleanly in reverse dependency order (quiesce.py; VMs by an ACPI shutdown that
must reach "shut off", else the save fails and every node is started again), copied, and started again in
order. Copies are `cp -a --reflink=auto --sparse=always` in one call (hard links inside a node dir, such as
overlayfs's index, stay hard links; xattrs, whiteouts and owners are kept): a reflink clone where the file system
can (XFS, Btrfs), else a sparse copy (ext4: the OSDs' sparse block files stay sparse). Hard-link trees are not
used: a node writes its files in place, which would change the checkpoint too.

Atomicity: a checkpoint is copied into `checkpoints/.tmp-<name>-<pid>/`, its manifest written last, and the
directory renamed to `checkpoints/<name>/`; only directories with a readable manifest and no leading dot are
listed. Restore moves the lab's current files aside first and moves them back if the copy fails.

Relocation (training copies, engine/copies.py): a checkpoint may be restored into another lab dir than the one it
was saved from (`Checkpoints(source=...)`). The saved files name their lab dir in absolute paths (state.json's
outputs, ssh_config, inventory.json, each node's LXC config) and each LXC config names the lab's cgroup dir
(`stacklab/<lab>-<hash of lxcpath>`); restore rewrites both to the new place (relocate.py), so the copy's
configs are what the container driver would render there. The nodes' roots hold no host path (checked: only
their lxc.log, which is history).
A checkpoint that training copies were made from cannot be deleted while one of them exists (a `reset` needs it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stacklab.engine.core import Engine
from stacklab.engine.lab_nodes import LabNode, lab_nodes
from stacklab.engine.plan import Plan
from stacklab.engine.quiesce import Quiescer
from stacklab.engine.relocate import relocate_dir, relocate_json
from stacklab.engine.vm_quiesce import MISSING
from stacklab.errors import EXIT_INVALID_LAB, StackLabError
from stacklab.exec.atomic import write_atomic
from stacklab.exec.runner import LocalRunner, Runner
from stacklab.model.lab import Lab

LOG = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
# State dir entries that are history or coordination, not the lab: never saved, never replaced by a restore.
NOT_SAVED = frozenset({CHECKPOINTS_DIR, "logs", "verify", "lock", "copies"})
# Runtime files inside saved entries: a VM's serial console log is this boot's history (QEMU writes a new one).
VM_RUNTIME_GLOBS = ("vm/*/console.log",)
COPIES_DIR = "copies"  # training copies of the lab (engine/copies.py), each with its own state dir
COPY_RECORD = "copy.json"
COPY_ARGV = ("cp", "-a", "--reflink=auto", "--sparse=always")
COPY_TIMEOUT = 3600.0
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
NAME_RULE = "1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or a digit"


class CheckpointError(StackLabError):
    """A bad checkpoint request (invalid, unknown or existing name; a lab kind not supported): nothing touched."""

    exit_code = EXIT_INVALID_LAB


def validate_name(name: str) -> str:
    """The name itself, or a CheckpointError (exit 2) saying what a name may be."""
    if not _NAME_RE.match(name) or ".." in name:
        raise CheckpointError(f"checkpoint name {name!r} is not valid: use {NAME_RULE}")
    return name


def allocated_bytes(path: Path) -> int:
    """Bytes the tree takes on disk (st_blocks, each hard-linked inode once): what a sparse copy costs."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for entry in [*dirs, *files]:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, entry))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint's manifest: what it holds and what saving it cost."""

    name: str
    lab: str
    created_at: float
    nodes: list[dict[str, Any]]
    entries: list[str]
    bytes_on_disk: int
    seconds: dict[str, float] = field(default_factory=dict)
    copy: str = " ".join(COPY_ARGV)
    version: int = MANIFEST_VERSION

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckpointInfo:
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"manifest version {data.get('version')}, expected {MANIFEST_VERSION}")
        return cls(
            name=str(data["name"]),
            lab=str(data["lab"]),
            created_at=float(data["created_at"]),
            nodes=[dict(n) for n in data["nodes"]],
            entries=[str(e) for e in data["entries"]],
            bytes_on_disk=int(data["bytes_on_disk"]),
            seconds={str(k): float(v) for k, v in data.get("seconds", {}).items()},
            copy=str(data.get("copy", "")),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RestoreResult:
    info: CheckpointInfo
    seconds: dict[str, float]


def _nothing(_phase: str) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


@dataclass
class Checkpoints:
    """The checkpoints of one lab, under `<lab_dir>/checkpoints/`. Callers hold the lab's lock."""

    lab: str
    lab_dir: Path
    runner: Runner
    quiescer: Quiescer
    # A context per phase (stop, copy, start...), e.g. the event bus's `phase`, so the JSONL log has the timings.
    phase: Callable[[str], AbstractContextManager[None]] = _nothing
    copy_timeout: float = COPY_TIMEOUT
    # Where the checkpoints are when they are another lab dir's (a training copy restores its original's).
    source: Path | None = None

    @property
    def root(self) -> Path:
        return self.source if self.source is not None else self.lab_dir / CHECKPOINTS_DIR

    @classmethod
    def reader(cls, lab: str, lab_dir: Path) -> Checkpoints:
        """For listing (no lock, no node is touched)."""
        runner = LocalRunner()
        return cls(lab, lab_dir, runner, Quiescer(lab, runner, known_hosts=lab_dir / "known_hosts"))

    # -- read -----------------------------------------------------------------------------------------------
    def saved(self) -> list[CheckpointInfo]:
        """Complete checkpoints, oldest first; a half-written one (no manifest, a dot name) is never listed."""
        found: list[CheckpointInfo] = []
        if not self.root.is_dir():
            return found
        for child in self.root.iterdir():
            if child.name.startswith(".") or not child.is_dir():
                continue
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                found.append(CheckpointInfo.from_json(json.loads((child / MANIFEST).read_text())))
        return sorted(found, key=lambda c: (c.created_at, c.name))

    def get(self, name: str) -> CheckpointInfo:
        validate_name(name)
        for info in self.saved():
            if info.name == name:
                return info
        known = ", ".join(c.name for c in self.saved()) or "none"
        raise CheckpointError(
            f"lab {self.lab} has no checkpoint named {name!r}",
            hint=f"checkpoints of {self.lab}: {known} (`stacklab checkpoint list {self.lab}`)",
        )

    # -- save -----------------------------------------------------------------------------------------------
    def save(self, name: str, resources: Mapping[str, Mapping[str, Any]]) -> CheckpointInfo:
        """Stop the nodes, copy the lab, write the manifest, rename into place, start the nodes again."""
        validate_name(name)
        if (self.root / name).exists():
            raise CheckpointError(
                f"lab {self.lab} already has a checkpoint named {name!r}",
                hint=f"pick another name, or `stacklab checkpoint delete {self.lab} {name}` first",
            )
        nodes = self._checkpointable_nodes(resources)
        entries = self._lab_entries()
        self._clear_half_written()
        self._check_space(entries)
        tmp = self.root / f".tmp-{name}-{os.getpid()}"
        seconds: dict[str, float] = {}
        tmp.mkdir(parents=True, mode=0o700)
        try:
            # A stop that fails (a VM that does not shut off) starts every node again too: `start` leaves a
            # node that never stopped running and only waits for it.
            try:
                with self._timed("stop", seconds):
                    self.quiescer.stop_all(nodes)
                with self._timed("copy", seconds):
                    (tmp / "data").mkdir(mode=0o700)
                    self._copy([self.lab_dir / e for e in entries], tmp / "data")
                    _drop_runtime_files(tmp / "data")
                info = CheckpointInfo(
                    name=name,
                    lab=self.lab,
                    created_at=time.time(),
                    nodes=[_node_json(n) for n in nodes],
                    entries=entries,
                    bytes_on_disk=allocated_bytes(tmp),
                    seconds=seconds,
                )
                write_atomic(tmp / MANIFEST, json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n", mode=0o600)
                os.rename(tmp, self.root / name)
            except BaseException as failed:
                # The first error is the one to report (why nothing was saved); a start that fails after it is
                # added to it, not raised in its place.
                try:
                    with self._timed("start", seconds):
                        self.quiescer.start_all(nodes)
                except Exception as also:
                    LOG.error("checkpoint %s of lab %s: starting the nodes again failed too: %s", name, self.lab, also)
                    failed.add_note(f"and starting the nodes again failed too: {also}")
                raise
            with self._timed("start", seconds):
                self.quiescer.start_all(nodes)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # The start time is known only now: record it beside the others (the checkpoint is complete already).
        info = CheckpointInfo(**{**asdict(info), "seconds": dict(seconds)})
        write_atomic(
            self.root / name / MANIFEST, json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n", mode=0o600
        )
        return info

    # -- restore --------------------------------------------------------------------------------------------
    def restore(self, name: str, resources: Mapping[str, Mapping[str, Any]]) -> RestoreResult:
        """Stop the nodes, put the checkpoint's files in place of the lab's, start the nodes in order.

        `resources` is the state as it is now: its nodes are the ones to stop. The lab must have the same nodes
        as when the checkpoint was saved (its bridges and lab file are the same lab's)."""
        info = self.get(name)
        current = self._checkpointable_nodes(resources)
        saved = self._nodes_here(info)
        now_names, saved_names = {n.name for n in current}, {n.name for n in saved}
        if now_names != saved_names:
            raise CheckpointError(
                f"lab {self.lab} has other nodes than checkpoint {name!r} "
                f"(only now: {sorted(now_names - saved_names) or '-'}; "
                f"only then: {sorted(saved_names - now_names) or '-'})",
                hint="a checkpoint restores the lab it was saved from; bring the lab file back to that shape first",
            )
        self._check_images(name, saved)
        self._check_domains(name, saved)
        data = self.root / name / "data"
        self._clear_half_written()
        seconds: dict[str, float] = {}
        with self._timed("stop", seconds):
            # VMs are powered off, not shut down: their disks are replaced (a failed copy puts the lab's own back,
            # which then boots as after a power cut: ext4's journal replays).
            self.quiescer.stop_all(current, destroy_vms=True)
        with self._timed("copy", seconds):
            aside = self._swap_in(data, info.entries)
            self._relocate(info, saved)
        try:
            with self._timed("start", seconds):
                self.quiescer.start_all(saved)
        finally:  # the checkpoint's files are in place: the lab's old ones are of no use, even if a start failed
            with self._timed("cleanup", seconds):
                shutil.rmtree(aside, ignore_errors=True)
        return RestoreResult(info, seconds)

    def materialize(self, name: str) -> tuple[CheckpointInfo, list[LabNode], dict[str, float]]:
        """Copy a checkpoint into an empty lab dir (a new training copy) and relocate it there; nothing is
        started. Returns the manifest, the nodes as they are here, and the seconds the copy took."""
        info = self.get(name)
        saved = self._nodes_here(info)
        vms = [n.name for n in saved if n.is_vm]
        if vms:
            raise CheckpointError(
                f"training copies hold container nodes only; checkpoint {name!r} of lab {self.lab} has VM nodes "
                f"{', '.join(vms)}",
                hint="a copy's nodes start inside its own network namespace, which a libvirt domain does not; "
                "`stacklab checkpoint restore` returns the lab itself to the checkpoint",
            )
        self._check_images(name, saved)
        present = self._lab_entries()
        if present:
            raise CheckpointError(
                f"{self.lab_dir} already holds a lab ({', '.join(present[:5])}): a checkpoint is materialized only "
                "into an empty lab dir",
                hint="reset that copy instead, or remove it first",
            )
        data = self.root / name / "data"
        absent = [e for e in info.entries if not (data / e).exists()]
        if absent or "state.json" not in info.entries:
            raise StackLabError(f"checkpoint {name!r} is incomplete: missing {absent or ['state.json']}")
        seconds: dict[str, float] = {}
        with self._timed("copy", seconds):
            try:
                self._copy([data / e for e in info.entries], self.lab_dir)
                self._relocate(info, saved)
            except BaseException:
                for entry in self._lab_entries():
                    target = self.lab_dir / entry
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target, ignore_errors=True)
                    else:
                        target.unlink(missing_ok=True)
                raise
        return info, saved, seconds

    def _nodes_here(self, info: CheckpointInfo) -> list[LabNode]:
        """The checkpoint's nodes with their lxcpath in this lab dir (the saved one when restored in place)."""
        origin = saved_lab_dir(info)
        nodes = [_node_from_json(n) for n in info.nodes]
        if origin is None or origin == self.lab_dir:
            return nodes
        return [
            dataclasses.replace(n, lxcpath=self.lab_dir / "lxc", ssh=relocate_json(n.ssh, origin, self.lab_dir))
            for n in nodes
        ]

    def _check_images(self, name: str, nodes: Sequence[LabNode]) -> None:
        missing = [f"{n.name}: {n.image_rootfs}" for n in nodes if n.image_rootfs and not Path(n.image_rootfs).is_dir()]
        missing += [f"{n.name}: {n.base_disk}" for n in nodes if n.base_disk and not Path(n.base_disk).is_file()]
        if missing:
            raise StackLabError(
                f"checkpoint {name!r} needs image root file systems that are gone: {'; '.join(missing)}",
                hint="the node roots are overlays on those images: rebuild the same recipe, or delete the checkpoint",
            )

    def _check_domains(self, name: str, nodes: Sequence[LabNode]) -> None:
        """Every VM's libvirt domain is still defined: the checkpoint holds its disks, not its definition."""
        gone = [f"{n.name} ({n.domain})" for n in nodes if n.is_vm and self.quiescer.vms.state(n) == MISSING]
        if gone:
            raise CheckpointError(
                f"checkpoint {name!r} restores VM disks into domains libvirt no longer has: {', '.join(gone)}",
                hint=f"`stacklab up {self.lab}` defines them again (then restore), or delete the checkpoint",
            )

    def _relocate(self, info: CheckpointInfo, nodes: Sequence[LabNode]) -> None:
        origin = saved_lab_dir(info)
        if origin is not None and origin != self.lab_dir:
            relocate_dir(self.lab, origin, self.lab_dir, [n.name for n in nodes])
        for node in nodes:
            if not node.is_vm:
                _drop_overlay_index(node)

    def _swap_in(self, data: Path, entries: Sequence[str]) -> Path:
        """Move the lab's entries aside, copy the checkpoint's in; on failure put the old ones back."""
        absent = [e for e in entries if not (data / e).exists()]
        if absent or "state.json" not in entries:
            raise StackLabError(f"checkpoint {data.parent.name!r} is incomplete: missing {absent or ['state.json']}")
        aside = self.lab_dir / f".restore-aside-{os.getpid()}"
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir(mode=0o700)
        moved = self._lab_entries()
        for entry in moved:
            os.rename(self.lab_dir / entry, aside / entry)
        try:
            self._copy([data / e for e in entries], self.lab_dir)
        except BaseException:
            for entry in entries:
                target = self.lab_dir / entry
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
            for entry in moved:
                os.rename(aside / entry, self.lab_dir / entry)
            aside.rmdir()
            raise
        return aside

    # -- delete ---------------------------------------------------------------------------------------------
    def delete(self, name: str) -> CheckpointInfo:
        info = self.get(name)
        users = copies_using(self.lab_dir, name)
        if users:
            raise CheckpointError(
                f"checkpoint {name!r} of lab {self.lab} is the base of training copies {', '.join(users)}",
                hint=f"remove them first (`stacklab down {self.lab}#K`); `stacklab down {self.lab}` removes all",
            )
        # Renamed out of the listing first, so an interrupted delete never leaves a listed, half-removed one.
        doomed = self.root / f".delete-{name}-{os.getpid()}"
        os.rename(self.root / name, doomed)
        shutil.rmtree(doomed)
        return info

    # -- helpers --------------------------------------------------------------------------------------------
    def _checkpointable_nodes(self, resources: Mapping[str, Mapping[str, Any]]) -> list[LabNode]:
        """The lab's nodes: containers with their lxcpath, VMs with their libvirt domain (what stop/start need)."""
        nodes = lab_nodes(resources)
        if not nodes:
            raise CheckpointError(f"lab {self.lab} has no nodes recorded", hint="bring it up first: `stacklab up`")
        others = [
            f"{n.name} ({n.kind})"
            for n in nodes
            if not ((n.kind == "container" and n.lxcpath is not None) or (n.is_vm and n.domain))
        ]
        if others:
            raise CheckpointError(
                f"checkpoints hold container and VM nodes as `up` records them; lab {self.lab} has {', '.join(others)}",
                hint="`stacklab up` the lab first, so every node is recorded whole",
            )
        return nodes

    def _lab_entries(self) -> list[str]:
        """The state dir's entries a checkpoint holds (dot names are temporary files of atomic writes)."""
        return sorted(p.name for p in self.lab_dir.iterdir() if p.name not in NOT_SAVED and not p.name.startswith("."))

    def _clear_half_written(self) -> None:
        """Leftovers of a save or delete that died (the caller holds the lab lock: nothing else writes here).
        Another lab dir's checkpoints (a copy's source) are its own lab's business: not cleared from here."""
        if self.source is None and self.root.is_dir():
            for child in self.root.iterdir():
                if child.name.startswith((".tmp-", ".delete-")):
                    shutil.rmtree(child, ignore_errors=True)
        for child in self.lab_dir.iterdir():
            if child.name.startswith(".restore-aside-"):
                shutil.rmtree(child, ignore_errors=True)

    def _check_space(self, entries: Sequence[str]) -> None:
        needed = sum(allocated_bytes(self.lab_dir / e) for e in entries)
        free = shutil.disk_usage(self.lab_dir).free
        if free < needed:
            raise StackLabError(
                f"a checkpoint of lab {self.lab} needs up to {needed / 2**30:.2f} GiB; "
                f"{free / 2**30:.2f} GiB free under {self.lab_dir}",
                hint="free space, or delete old checkpoints (`stacklab checkpoint list`)",
            )

    def _copy(self, sources: Sequence[Path], dest: Path) -> None:
        if sources:
            self.runner.run([*COPY_ARGV, *map(str, sources), f"{dest}/"], timeout=self.copy_timeout)

    @contextlib.contextmanager
    def _timed(self, what: str, seconds: dict[str, float]) -> Iterator[None]:
        began = time.monotonic()
        with self.phase(f"checkpoint-{what}"):
            yield
        seconds[what] = round(time.monotonic() - began, 2)


def saved_lab_dir(info: CheckpointInfo) -> Path | None:
    """The lab dir a checkpoint was saved from: the parent of its nodes' lxcpath (`<lab_dir>/lxc`)."""
    paths = {str(n.get("lxcpath")) for n in info.nodes if n.get("lxcpath")}
    if len(paths) != 1:
        return None
    return Path(paths.pop()).parent


def copies_using(lab_dir: Path, name: str) -> list[str]:
    """Training copies of the lab (their numbers) made from checkpoint `name`."""
    users = []
    for record in sorted((lab_dir / COPIES_DIR).glob(f"*/{COPY_RECORD}")):
        with contextlib.suppress(OSError, ValueError):
            if json.loads(record.read_text()).get("checkpoint") == name:
                users.append(record.parent.name)
    return users


def _drop_overlay_index(node: LabNode) -> None:
    """Remove the overlay's inode index of a restored node (LXC's `work/index` beside the upper dir).

    Nodes mounted with `index=on` (nfs-ganesha's file handles) record the upper dir's file handle on the index,
    and each entry names an upper inode: a copy has new inodes, so the kernel refuses the mount (ESTALE, "try
    deleting index dir"). Deleted, the index is made anew at mount and filled again as files are copied up."""
    index = node.layout.node_dir / "work" / "index"
    if index.is_dir():
        shutil.rmtree(index)


def _drop_runtime_files(data: Path) -> None:
    for pattern in VM_RUNTIME_GLOBS:
        for path in data.glob(pattern):
            path.unlink(missing_ok=True)


_VM_FIELDS = ("domain", "uri", "accel", "console_log", "base_disk")


def _node_json(node: LabNode) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": node.name,
        "kind": node.kind,
        "roles": list(node.roles),
        "lxcpath": str(node.lxcpath) if node.lxcpath else None,
        "ssh": dict(node.ssh),
        "image_rootfs": node.image_rootfs,
    }
    if node.is_vm:
        data.update({key: getattr(node, key) for key in _VM_FIELDS})
    return data


def _node_from_json(data: Mapping[str, Any]) -> LabNode:
    return LabNode(
        name=str(data["name"]),
        kind=str(data["kind"]),
        roles=tuple(str(r) for r in data.get("roles", ())),
        lxcpath=Path(str(data["lxcpath"])) if data.get("lxcpath") else None,
        ssh=dict(data.get("ssh") or {}),
        image_rootfs=str(data["image_rootfs"]) if data.get("image_rootfs") else None,
        **{key: str(data[key]) for key in _VM_FIELDS if data.get(key)},
    )


# -- with a running engine (the CLI's session) -----------------------------------------------------------------


def _close_node_runners(engine: Engine) -> None:
    """SSH connections to nodes that are about to stop would be dead after; the next use opens new ones."""
    close = getattr(engine.ctx.node_runner, "close", None)
    if callable(close):
        close()


def checkpoints_of(engine: Engine, source: Path | None = None) -> Checkpoints:
    """The engine's lab's checkpoints, or (`source`) another lab dir's checkpoints restored into this lab."""
    quiescer = Quiescer(engine.lab.name, engine.ctx.runner, known_hosts=engine.state.dir / "known_hosts")
    return Checkpoints(
        engine.lab.name, engine.state.dir, engine.ctx.runner, quiescer, phase=engine.bus.phase, source=source
    )


def save_lab(engine: Engine, name: str) -> CheckpointInfo:
    """Save a converged lab: its plan must be empty, so what is saved is what the lab file describes."""
    store = checkpoints_of(engine)
    validate_name(name)
    the_plan = engine.plan()
    if not the_plan.is_empty:
        changes = ", ".join(f"{c.action.value} {c.resource.id}" for c in the_plan.actionable[:5])
        raise StackLabError(
            f"lab {engine.lab.name} is not converged ({len(the_plan.actionable)} changes planned: {changes})",
            hint="run `stacklab up` first, so the checkpoint holds the lab its file describes",
        )
    _close_node_runners(engine)
    return store.save(name, engine.state.resources)


def restore_lab(
    engine: Engine, name: str, reload_lab: Callable[[], Lab] | None = None, *, source: Path | None = None
) -> tuple[RestoreResult, Engine, Plan]:
    """Restore, then plan the restored lab with a new engine (the old one holds the state from before): the plan
    should be empty; what it is not (a service a boot did not start) the caller applies, as `up` would.
    `reload_lab` reads the lab from the restored state (the lab file may have changed since the save)."""
    store = checkpoints_of(engine, source)
    store.get(name)  # an unknown name is refused before any node stops
    _close_node_runners(engine)
    result = store.restore(name, engine.state.resources)
    restored = fresh_engine(engine, reload_lab() if reload_lab is not None else engine.lab)
    with engine.bus.phase("checkpoint-replan"):
        the_plan = restored.plan()
    return result, restored, the_plan


def fresh_engine(engine: Engine, lab: Lab) -> Engine:
    """A new engine on the same state dir, runners and bus: it reads the state file as it is now."""
    return Engine(
        lab,
        state_root=engine.state.dir.parent,
        runner=engine.ctx.runner,
        bus=engine.bus,
        choices=engine.choices,
        host=engine.ctx.host,
        node_runner=engine.ctx.node_runner,
        workers=engine.workers,
    )
