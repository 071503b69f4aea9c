"""A read-only picture of the host objects a lab can leave behind, and the leak check `down` runs with it.

`up` takes a snapshot before it touches anything; `down`, after deleting what the state file names, takes another
and reports every object present after and not before: interfaces, network namespaces, mount points, bound loop
devices, LXC containers, libvirt domains and processes.

Processes need care. A host keeps starting processes on its own (cron, apt timers, another user's shell, the
CI agent, a second lab), and PIDs are reused. So a process is identified by (pid, starttime) — a PID that was
reused is a new process — and a new process counts as a leak only when something ties it to this lab: its
cmdline, its cgroup path, its working directory or its STACKLAB_* environment mentions one of the lab's markers
(its name, state directory, cgroup directory and domain names, matched exactly; its kernel prefix, matched as the
start of a name), or one of its ancestors' cmdlines does. Exactly means a delimiter after the marker: lab
`containers-3` does not claim `/root/.stacklab/containers-3b` nor `stacklab/containers-3b-1a2b3c/n1`. Without
that filter every unrelated process started during the lab would fail `down`; with it, a daemon the lab started
(tgtd, ganesha, ceph-osd, qemu) is found because it was started with the lab's paths and names in its arguments, in its
cwd, or under a lab-named cgroup, or inherits STACKLAB_LAB from the runner. The process taking the snapshot and
its ancestors (e.g. `stacklab down <lab>` and the shell that ran it) are never leaks and never lend their
markers to their descendants; nor are the other commands of its shell job (`stacklab down lab | tee log` run in a
directory named after the lab: `tee` is a child of the same shell, in the same process group). Daemons the lab
started are not: they detach, and their parent is never one of the taker's ancestors.

Other kinds are counted without a filter: a new interface, namespace or mount point during the lab window is
worth a look even if another actor made it. The one exception is libvirt: if libvirtd was not reachable before
(the lab may start it), only new domains whose name carries a lab marker count.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stacklab.errors import StackLabError
from stacklab.exec.runner import Runner

LOG = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
COMMAND_TIMEOUT = 30.0
LIBVIRT_DEFINITION_DIRS = ("etc/libvirt/qemu", "etc/libvirt/storage", "etc/libvirt/qemu/networks")
LIBVIRT_SOCKETS = ("run/libvirt/libvirt-sock", "run/libvirt/virtqemud-sock")
ENV_PREFIX = "STACKLAB_"
# Host residue that is not a leak: the first `ip netns add` bind-mounts /run/netns onto itself (made shared) and
# that mount stays after the last namespace is gone, by design of iproute2.
BENIGN_MOUNTS = frozenset({"/run/netns", "/var/run/netns"})
_MAX_ANCESTRY = 64


@dataclass(frozen=True)
class ProcessInfo:
    """One process, told apart from a later process with the same PID by its start time (clock ticks)."""

    pid: int
    starttime: int
    ppid: int
    comm: str
    cmdline: str = ""
    cgroup: str = ""  # distinct cgroup paths, comma-separated ("" when only the root cgroup)
    cwd: str = ""
    env: tuple[str, ...] = ()  # STACKLAB_* variables as NAME=value
    pgrp: int = 0  # process group (a shell job: the processes of one pipeline share it)

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.starttime)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["env"] = list(self.env)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessInfo:
        return cls(
            pid=int(data["pid"]),
            starttime=int(data["starttime"]),
            ppid=int(data.get("ppid", 0)),
            comm=str(data.get("comm", "")),
            cmdline=str(data.get("cmdline", "")),
            cgroup=str(data.get("cgroup", "")),
            cwd=str(data.get("cwd", "")),
            env=tuple(str(e) for e in data.get("env", ())),
            pgrp=int(data.get("pgrp", 0)),
        )


@dataclass(frozen=True)
class HostSnapshot:
    interfaces: tuple[str, ...] = ()
    netns: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()  # mount points in mountinfo order; a stacked mount appears twice
    loop_devices: tuple[tuple[str, str], ...] = ()  # (device, backing file)
    processes: tuple[ProcessInfo, ...] = ()
    lxc_containers: tuple[str, ...] = ()  # "<lxcpath>/<name>"
    libvirt_domains: tuple[str, ...] | None = None  # None: libvirt was not reachable
    # Persistent libvirt definitions (domains, storage pools, networks) as files: seen with libvirtd stopped too.
    libvirt_definitions: tuple[str, ...] = ()
    taker: tuple[tuple[int, int], ...] = ()  # the snapshotting process and its ancestors, as process keys
    taken_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "taken_at": self.taken_at,
            "interfaces": list(self.interfaces),
            "netns": list(self.netns),
            "mounts": list(self.mounts),
            "loop_devices": [{"device": d, "backing_file": b} for d, b in self.loop_devices],
            "processes": [p.to_json() for p in self.processes],
            "lxc_containers": list(self.lxc_containers),
            "libvirt_domains": None if self.libvirt_domains is None else list(self.libvirt_domains),
            "libvirt_definitions": list(self.libvirt_definitions),
            "taker": [list(k) for k in self.taker],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> HostSnapshot:
        raw: Mapping[str, Any] = json.loads(data) if isinstance(data, str) else data
        version = raw.get("version", SNAPSHOT_VERSION)
        if version != SNAPSHOT_VERSION:
            raise StackLabError(
                f"host snapshot has version {version}, this stacklab reads {SNAPSHOT_VERSION}",
                hint="run `stacklab down --no-leak-check` for this lab",
            )
        domains = raw.get("libvirt_domains")
        return cls(
            interfaces=tuple(raw.get("interfaces", ())),
            netns=tuple(raw.get("netns", ())),
            mounts=tuple(raw.get("mounts", ())),
            loop_devices=tuple((str(d["device"]), str(d["backing_file"])) for d in raw.get("loop_devices", ())),
            processes=tuple(ProcessInfo.from_json(p) for p in raw.get("processes", ())),
            lxc_containers=tuple(raw.get("lxc_containers", ())),
            libvirt_domains=None if domains is None else tuple(domains),
            libvirt_definitions=tuple(raw.get("libvirt_definitions", ())),
            taker=tuple((int(k[0]), int(k[1])) for k in raw.get("taker", ())),
            taken_at=float(raw.get("taken_at", 0.0)),
        )


@dataclass(frozen=True)
class Leak:
    """One object present after the lab and not before, e.g. `interface s4c9br-mgmt`."""

    kind: str
    object: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.object}" + (f" ({self.detail})" if self.detail else "")

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "object": self.object, "detail": self.detail}


# ----------------------------------------------------------------------------------------------------------------
# Taking a snapshot. Everything is read from `root` (tests point it at a fake tree); commands go through the Runner.


def take_snapshot(
    runner: Runner,
    *,
    lxcpaths: Sequence[str | Path] = (),
    root: Path = Path("/"),
    self_pid: int | None = None,
) -> HostSnapshot:
    """Read the host's interfaces, namespaces, mounts, loop devices, processes, LXC containers and domains."""
    processes = read_processes(root)
    pid = os.getpid() if self_pid is None else self_pid
    return HostSnapshot(
        interfaces=read_interfaces(root),
        netns=read_netns(runner, root),
        mounts=read_mounts(root),
        loop_devices=read_loop_devices(root),
        processes=processes,
        lxc_containers=read_lxc_containers(lxcpaths, root),
        libvirt_domains=read_libvirt_domains(runner, root),
        libvirt_definitions=read_libvirt_definitions(root),
        taker=ancestry_keys(processes, pid),
        taken_at=time.time(),
    )


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def read_interfaces(root: Path) -> tuple[str, ...]:
    return tuple(_listdir(root / "sys/class/net"))


def read_netns(runner: Runner, root: Path) -> tuple[str, ...]:
    """Named network namespaces: `ip netns list` and the entries of /run/netns (either may miss some)."""
    names = set(_listdir(root / "run/netns"))
    try:
        result = runner.run(["ip", "netns", "list"], timeout=COMMAND_TIMEOUT, check=False)
    except StackLabError as exc:  # `ip` missing or hanging: /run/netns alone still tells most of it
        LOG.warning("cannot list network namespaces with ip: %s", exc)
    else:
        if result.ok:
            names.update(line.split()[0] for line in result.stdout.splitlines() if line.strip())
        else:
            LOG.warning("`ip netns list` failed (rc %s): %s", result.returncode, result.stderr.strip())
    return tuple(sorted(names))


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape_mount(path: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), path)


def read_mounts(root: Path) -> tuple[str, ...]:
    try:
        text = (root / "proc/self/mountinfo").read_text()
    except OSError as exc:
        LOG.warning("cannot read mountinfo: %s", exc)
        return ()
    points = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(_unescape_mount(fields[4]))
    return tuple(points)


def read_loop_devices(root: Path) -> tuple[tuple[str, str], ...]:
    found = []
    block = root / "sys/block"
    for name in _listdir(block):
        if not name.startswith("loop"):
            continue
        try:
            backing = (block / name / "loop/backing_file").read_text().strip()
        except OSError:  # not bound
            continue
        found.append((f"/dev/{name}", backing))
    return tuple(found)


def _read_process(proc: Path, pid: int) -> ProcessInfo | None:
    base = proc / str(pid)
    try:
        stat = (base / "stat").read_text()
    except OSError:  # exited meanwhile
        return None
    # comm is in parentheses and may itself hold spaces or parentheses: split after the last ')'.
    lpar, rpar = stat.find("("), stat.rfind(")")
    if lpar < 0 or rpar < 0:
        return None
    comm = stat[lpar + 1 : rpar]
    rest = stat[rpar + 2 :].split()
    try:
        ppid, pgrp = int(rest[1]), int(rest[2])
        starttime = int(rest[19])
    except (IndexError, ValueError):
        return None
    try:
        cmdline = (base / "cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmdline = ""
    try:
        lines = (base / "cgroup").read_text().splitlines()
        paths = sorted({line.split(":", 2)[2] for line in lines if line.count(":") >= 2} - {"/"})
        cgroup = ",".join(paths)
    except OSError:
        cgroup = ""
    try:
        cwd = os.readlink(base / "cwd")
    except OSError:
        cwd = ""
    try:
        environ = (base / "environ").read_bytes().decode(errors="replace").split("\0")
        env = tuple(sorted(e for e in environ if e.startswith(ENV_PREFIX)))
    except OSError:
        env = ()
    return ProcessInfo(pid, starttime, ppid, comm, cmdline, cgroup, cwd, env, pgrp)


def read_processes(root: Path) -> tuple[ProcessInfo, ...]:
    proc = root / "proc"
    found = []
    for entry in _listdir(proc):
        if entry.isdigit():
            info = _read_process(proc, int(entry))
            if info is not None:
                found.append(info)
    return tuple(sorted(found, key=lambda p: p.pid))


def read_lxc_containers(lxcpaths: Iterable[str | Path], root: Path) -> tuple[str, ...]:
    """LXC containers: directories holding a `config` under each lxcpath (lxc-ls does the same)."""
    found = []
    for lxcpath in lxcpaths:
        base = root / str(lxcpath).lstrip("/")
        for name in _listdir(base):
            if (base / name / "config").is_file():
                found.append(f"{lxcpath}/{name}")
    return tuple(sorted(found))


def read_libvirt_definitions(root: Path) -> tuple[str, ...]:
    """Persistent domain, storage pool and network definitions, as paths of libvirt's XML files."""
    found = [
        str(path.relative_to(root))
        for directory in LIBVIRT_DEFINITION_DIRS
        if (root / directory).is_dir()
        for path in (root / directory).glob("*.xml")
    ]
    return tuple(sorted(found))


def read_libvirt_domains(runner: Runner, root: Path) -> tuple[str, ...] | None:
    """Domain names from qemu:///system, or None when no libvirt socket exists or virsh fails."""
    if not any((root / sock).exists() for sock in LIBVIRT_SOCKETS):
        return None
    argv = ["virsh", "-c", "qemu:///system", "list", "--all", "--name"]
    try:
        result = runner.run(argv, timeout=COMMAND_TIMEOUT, check=False)
    except StackLabError as exc:
        LOG.warning("cannot list libvirt domains: %s", exc)
        return None
    if not result.ok:
        LOG.warning("virsh list failed (rc %s): %s", result.returncode, result.stderr.strip())
        return None
    return tuple(sorted(line.strip() for line in result.stdout.splitlines() if line.strip()))


def ancestry_keys(processes: Iterable[ProcessInfo], pid: int) -> tuple[tuple[int, int], ...]:
    """Keys of `pid` and its ancestors, nearest first."""
    by_pid = {p.pid: p for p in processes}
    keys: list[tuple[int, int]] = []
    current = by_pid.get(pid)
    while current is not None and len(keys) < _MAX_ANCESTRY:
        keys.append(current.key)
        if current.ppid in (0, current.pid):
            break
        current = by_pid.get(current.ppid)
    return tuple(keys)


# ----------------------------------------------------------------------------------------------------------------
# The leak computation (pure).


# A lab name is [a-z][a-z0-9-]*: a marker followed by one of these characters is the start of another name
# (`containers-3` in `containers-3b` or `containers-3-x`), never the marker itself.
_NAME_CONTINUES = "A-Za-z0-9_-"


def mentions(text: str, marker: str, *, prefix: bool = False) -> bool:
    """`marker` occurs in `text` as a whole name: not glued to a preceding letter or digit (lab `aio` is not in
    `raio`) and, unless `prefix`, followed by a delimiter (lab `containers-3` is not in `containers-3b`).

    `prefix` is for the kernel prefix only: it starts kernel names by design (`s4c9` in `s4c9br-mgmt`), and has a
    fixed length when derived from the lab name, so one lab's prefix never starts another's.
    """
    tail = "" if prefix else f"(?![{_NAME_CONTINUES}])"
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(marker)}{tail}", text) is not None


def mentions_any(text: str, exact: Sequence[str], prefixes: Sequence[str] = ()) -> str | None:
    """The first marker `text` mentions (exact markers, then prefix markers), or None."""
    for marker in exact:
        if marker and mentions(text, marker):
            return marker
    for marker in prefixes:
        if marker and mentions(text, marker, prefix=True):
            return marker
    return None


def _process_reference(proc: ProcessInfo, exact: Sequence[str], prefixes: Sequence[str]) -> str | None:
    for where, text in (
        ("cmdline", proc.cmdline),
        ("cgroup", proc.cgroup),
        ("cwd", proc.cwd),
        ("environment", " ".join(proc.env)),
    ):
        marker = mentions_any(text, exact, prefixes) if text else None
        if marker:
            return f"{where} mentions {marker!r}"
    return None


def _related_to_lab(
    proc: ProcessInfo,
    by_pid: Mapping[int, ProcessInfo],
    taker: set[tuple[int, int]],
    exact: Sequence[str],
    prefixes: Sequence[str],
) -> str | None:
    """Why `proc` belongs to the lab (its own references, else an ancestor's cmdline), or None."""
    own = _process_reference(proc, exact, prefixes)
    if own:
        return own
    parent = by_pid.get(proc.ppid)
    for _ in range(_MAX_ANCESTRY):
        if parent is None or parent.key in taker or parent.pid <= 1:
            return None
        marker = mentions_any(parent.cmdline, exact, prefixes) if parent.cmdline else None
        if marker:
            return f"ancestor {parent.pid} {parent.comm} mentions {marker!r}"
        parent = by_pid.get(parent.ppid) if parent.ppid != parent.pid else None
    return None


def _in_takers_job(proc: ProcessInfo, by_pid: Mapping[int, ProcessInfo], taker: Sequence[tuple[int, int]]) -> bool:
    """`proc` runs beside the snapshot taker in its shell job: a child of one of the taker's ancestors (not of the
    taker itself, whose children are checked, and not of init, which adopts orphaned daemons) in the taker's
    process group. A daemon that detached properly has its own session and process group anyway."""
    if not taker:
        return False
    me, parent = by_pid.get(taker[0][0]), by_pid.get(proc.ppid)
    if me is None or me.key != taker[0] or not me.pgrp or parent is None or parent.pid <= 1:
        return False
    return proc.pgrp == me.pgrp and parent.key in taker[1:]


def leaks(
    before: HostSnapshot,
    after: HostSnapshot,
    *,
    lab_markers: Sequence[str] = (),
    prefix_markers: Sequence[str] = (),
) -> list[Leak]:
    """Objects present in `after` and not in `before`; new processes only when they reference the lab.

    `lab_markers` match exactly (a delimiter after them), `prefix_markers` (the kernel prefix) as a name's start.

    Processes are compared by (pid, starttime): a process running before the lab is never a leak, even if a
    lab object now mentions it, and a reused PID is a new process. See the module docstring for why an
    unreferenced new process is not counted.
    """
    exact = [m for m in lab_markers if m]
    prefixes = [m for m in prefix_markers if m]
    found: list[Leak] = []
    found += [Leak("interface", n) for n in sorted(set(after.interfaces) - set(before.interfaces))]
    found += [Leak("netns", n) for n in sorted(set(after.netns) - set(before.netns))]
    extra_mounts = Counter(after.mounts) - Counter(before.mounts)
    for point, count in sorted(extra_mounts.items()):
        if point in BENIGN_MOUNTS:
            continue
        found.append(Leak("mount", point, f"{count} more mounts than before" if count > 1 else ""))
    for device, backing in sorted(set(after.loop_devices) - set(before.loop_devices)):
        found.append(Leak("loop device", device, f"backing file {backing}"))
    found += [Leak("lxc container", c) for c in sorted(set(after.lxc_containers) - set(before.lxc_containers))]
    if after.libvirt_domains is not None:
        new_domains = sorted(set(after.libvirt_domains) - set(before.libvirt_domains or ()))
        if before.libvirt_domains is None:  # libvirt unreachable before: only domains named for the lab
            new_domains = [d for d in new_domains if mentions_any(d, exact, prefixes)]
        found += [Leak("libvirt domain", d) for d in new_domains]
    new_definitions = sorted(set(after.libvirt_definitions) - set(before.libvirt_definitions))
    found += [Leak("libvirt definition", d) for d in new_definitions]
    old = {p.key for p in before.processes}
    taker = set(after.taker)
    by_pid = {p.pid: p for p in after.processes}
    for proc in after.processes:
        if proc.key in old or proc.key in taker or _in_takers_job(proc, by_pid, after.taker):
            continue
        why = _related_to_lab(proc, by_pid, taker, exact, prefixes)
        if why:
            found.append(Leak("process", f"{proc.pid} {proc.comm}", f"started during the lab; {why}"))
    return found
