"""A libvirtd for VM nodes: the host's own if one answers, else one stacklab starts, records and later stops.

Hosts without systemd (CI containers) have no libvirtd running. Then stacklab starts `virtlogd -d` (unless one
runs) and `libvirtd -d` itself. When KVM cannot run guests, libvirtd runs in a private mount namespace where
/dev/kvm is an empty file and qemu.conf says `namespaces = [ ]`: libvirt then offers only TCG, and domain starts
take ~0.5 s instead of ~64 s of KVM capability re-probing (host-notes, section 6). The host's files are not
changed; the binds exist only in the daemon's namespace and vanish with it.

Ownership: the daemons stacklab started are recorded (pid, kernel start time, executable) in
`/var/lib/stacklab/libvirtd/owned.json`. `stop_owned_libvirtd()` signals a pid only when all three still match,
so a recycled pid or a daemon someone else started is never touched. Nothing is ever killed by name; process
names are only read, to refuse to start a second system libvirtd (two would share /run/libvirt). Only daemons in
stacklab's own PID namespace and root count: nova's libvirtd inside another lab's compute container is not the
host's, so a lab with VM nodes comes up beside a lab whose nodes run libvirt.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stacklab.errors import StackLabError
from stacklab.exec.filelock import file_lock
from stacklab.exec.readiness import ReadinessTimeout, wait_until
from stacklab.exec.runner import CommandError, CommandTimeout, Runner

LOG = logging.getLogger(__name__)

URI = "qemu:///system"
RECORD_DIR = Path("/var/lib/stacklab/libvirtd")
RECORD_NAME = "owned.json"
HOST_QEMU_CONF = Path("/etc/libvirt/qemu.conf")
LIBVIRTD_PIDFILE = Path("/run/libvirtd.pid")
VIRTLOGD_PIDFILE = Path("/run/virtlogd.pid")
VIRTLOGD_SOCKET = Path("/run/libvirt/virtlogd-sock")
KVM_DEVICE = Path("/dev/kvm")

_ANSWER_TIMEOUT = 30.0
_START_TIMEOUT = 60.0
_POLL = 0.2
# Runs inside `unshare --mount --propagation slave`: hide KVM, use the namespace-free qemu.conf, become libvirtd.
# Paths arrive as positional parameters ($1, $2), never interpolated into the script.
_HIDE_KVM_SCRIPT = 'mount --bind "$1" /dev/kvm && mount --bind "$2" /etc/libvirt/qemu.conf && exec libvirtd -d'


@dataclass(frozen=True)
class DaemonRecord:
    """A process stacklab started, identified beyond its pid (pids are recycled)."""

    name: str
    pid: int
    start_time: int  # clock ticks after boot, /proc/<pid>/stat field 22
    exe: str

    def is_alive(self) -> bool:
        return _identity(self.pid) == (self.start_time, self.exe)


@dataclass(frozen=True)
class LibvirtdHandle:
    uri: str
    owned: bool  # stacklab started (and may later stop) this libvirtd
    started_now: bool
    hide_kvm: bool | None  # None: the host's daemon, not ours to know


# ----------------------------------------------------------------------------------------------------
# /proc helpers (read-only)


def _identity(pid: int) -> tuple[int, str] | None:
    """(start time, executable path) of a live pid, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    # comm may contain spaces and parentheses: the fields we want follow the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19]), exe.removesuffix(" (deleted)")


def processes_named(name: str, proc: Path = Path("/proc")) -> list[int]:
    """Live pids whose comm is `name` (to detect, never to signal). Zombies are skipped: without a reaping
    init (containers), a stopped daemon lingers as a zombie child of PID 1 for a while."""
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != name:
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X"):
            pids.append(int(entry.name))
    return sorted(pids)


def _namespace(proc_entry: Path, kind: str) -> str | None:
    try:
        return os.readlink(proc_entry / "ns" / kind)  # e.g. "pid:[4026531836]"
    except OSError:
        return None


def _root_identity(proc_entry: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(proc_entry / "root")  # follows the magic link into the process's root directory
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def shares_our_host(proc_entry: Path, me: Path = Path("/proc/self")) -> bool:
    """Whether the process at `proc_entry` runs on the same host as stacklab, so that its daemon would share our
    /run/libvirt: the same PID namespace, and the same mount namespace or at least the same root directory.

    A libvirtd or virtlogd inside a lab node (nova's, in another lab's compute container) has its own PID and
    mount namespaces and its own root: it serves that node, not the host, and must neither block nor stand in
    for the host's daemon. Our own hide-KVM libvirtd runs in a private mount namespace (a slave copy, same root
    and same /run) and the host's PID namespace: it is the host's. Unreadable namespaces (the process exited)
    count as not ours.
    """
    pid_ns = _namespace(proc_entry, "pid")
    if pid_ns is None or pid_ns != _namespace(me, "pid"):
        return False
    if _namespace(proc_entry, "mnt") == _namespace(me, "mnt"):
        return True
    root = _root_identity(proc_entry)
    return root is not None and root == _root_identity(me)


def host_processes_named(name: str, proc: Path = Path("/proc")) -> list[int]:
    """`processes_named`, keeping only processes of this host (see `shares_our_host`), not of lab nodes."""
    return [pid for pid in processes_named(name, proc) if shares_our_host(proc / str(pid), proc / "self")]


def _pid_from_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _record_of(name: str, pid: int) -> DaemonRecord:
    ident = _identity(pid)
    if ident is None:
        raise StackLabError(f"{name} (pid {pid}) exited right after starting", hint=f"see its log under {RECORD_DIR}")
    return DaemonRecord(name=name, pid=pid, start_time=ident[0], exe=ident[1])


# ----------------------------------------------------------------------------------------------------
# Record file


def read_record(record_dir: Path = RECORD_DIR) -> dict[str, Any] | None:
    path = record_dir / RECORD_NAME
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        LOG.warning("ignoring unreadable %s: %s", path, exc)
        return None
    return data


def _write_record(record_dir: Path, data: dict[str, Any]) -> None:
    path = record_dir / RECORD_NAME
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def owned_daemons(record_dir: Path = RECORD_DIR) -> list[DaemonRecord]:
    """The daemons the record names that are still the very processes stacklab started."""
    data = read_record(record_dir) or {}
    out = []
    for name in ("libvirtd", "virtlogd"):
        entry = data.get(name)
        if entry:
            record = DaemonRecord(**entry)
            if record.is_alive():
                out.append(record)
    return out


# ----------------------------------------------------------------------------------------------------
# Ensure / stop


def libvirtd_answers(runner: Runner, uri: str = URI, *, timeout: float = _ANSWER_TIMEOUT) -> bool:
    try:
        result = runner.run(["virsh", "-c", uri, "uri"], timeout=timeout, check=False)
    except CommandTimeout:
        LOG.warning("libvirt at %s did not answer within %ss", uri, timeout)
        return False
    return result.ok


def ensure_libvirtd(
    runner: Runner,
    *,
    hide_kvm: bool = True,
    record_dir: Path = RECORD_DIR,
    budget: float = _START_TIMEOUT,
) -> LibvirtdHandle:
    """A libvirtd answering on qemu:///system: the host's (left alone) or one stacklab starts and records.

    `hide_kvm` (when KVM cannot run guests) starts ours in a private mount namespace without /dev/kvm.
    Raises if a libvirtd process exists but does not answer: a second one would share its /run/libvirt.
    """
    with file_lock(record_dir / "lock"):
        ours = {d.name: d for d in owned_daemons(record_dir)}
        if libvirtd_answers(runner):
            owned = "libvirtd" in ours
            recorded = read_record(record_dir) or {}
            return LibvirtdHandle(URI, owned, False, recorded.get("hide_kvm") if owned else None)
        running = host_processes_named("libvirtd")
        if running:
            raise StackLabError(
                f"a libvirtd is running (pid {', '.join(map(str, running))}) but does not answer on {URI}",
                hint="stop or fix that daemon; stacklab will not start a second system libvirtd beside it",
            )
        return _start(runner, record_dir, ours.get("virtlogd"), hide_kvm=hide_kvm, budget=budget)


def _start(
    runner: Runner, record_dir: Path, our_virtlogd: DaemonRecord | None, *, hide_kvm: bool, budget: float
) -> LibvirtdHandle:
    virtlogd = our_virtlogd
    if not host_processes_named("virtlogd"):  # a virtlogd inside a lab node does not serve the host
        env = {"LIBVIRT_LOG_OUTPUTS": f"3:file:{record_dir / 'virtlogd.log'}"}
        runner.run(["virtlogd", "-d"], timeout=_START_TIMEOUT, env=env)
        pid = _wait_pidfile(VIRTLOGD_PIDFILE, "virtlogd", budget)
        virtlogd = _record_of("virtlogd", pid)
        LOG.info("started virtlogd (pid %d)", pid)

    hide = hide_kvm and KVM_DEVICE.exists()
    env = {"LIBVIRT_LOG_OUTPUTS": f"3:file:{record_dir / 'libvirtd.log'}"}
    if hide:
        nokvm, qemu_conf = _namespace_files(record_dir)
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            "--",
            "sh",
            "-c",
            _HIDE_KVM_SCRIPT,
            "stacklab-libvirtd",
            str(nokvm),
            str(qemu_conf),
        ]
    else:
        argv = ["libvirtd", "-d"]
    try:
        LIBVIRTD_PIDFILE.unlink(missing_ok=True)  # stale: no libvirtd process exists (checked by the caller)
        runner.run(argv, timeout=_START_TIMEOUT, env=env)
        pid = _wait_pidfile(LIBVIRTD_PIDFILE, "libvirtd", budget)
        libvirtd = _record_of("libvirtd", pid)
        # Record before waiting for it to answer: if it hangs, `down` can still stop exactly this process.
        _write_record(
            record_dir,
            {
                "libvirtd": asdict(libvirtd),
                "virtlogd": asdict(virtlogd) if virtlogd else None,
                "hide_kvm": hide,
                "started_at": time.time(),
                "uri": URI,
            },
        )
        _wait_answers(runner, budget)
    except (CommandError, CommandTimeout) as exc:
        raise StackLabError(f"could not start libvirtd: {exc}", hint=f"see {record_dir / 'libvirtd.log'}") from exc
    LOG.info("started libvirtd (pid %d%s)", pid, ", KVM hidden" if hide else "")
    return LibvirtdHandle(URI, True, True, hide)


def _namespace_files(record_dir: Path) -> tuple[Path, Path]:
    nokvm = record_dir / "nokvm"
    nokvm.touch(mode=0o600, exist_ok=True)
    host_conf = HOST_QEMU_CONF.read_text() if HOST_QEMU_CONF.exists() else ""
    qemu_conf = record_dir / "qemu.conf"
    qemu_conf.write_text(
        host_conf
        + "\n# stacklab: libvirtd runs in a private mount namespace with /dev/kvm hidden; a per-domain /dev"
        + "\n# namespace could not copy the bind-mounted /dev/kvm.\nnamespaces = [ ]\n"
    )
    qemu_conf.chmod(0o600)
    return nokvm, qemu_conf


def _wait_pidfile(path: Path, name: str, budget: float) -> int:
    live: list[int] = []

    def written() -> bool:
        pid = _pid_from_file(path)
        if pid is not None and _identity(pid) is not None:
            live.append(pid)
            return True
        return False

    try:
        wait_until(written, budget=budget, interval=_POLL, what=f"{name} to write its pid to {path}")
    except ReadinessTimeout:
        raise StackLabError(f"{name} wrote no live pid to {path} within {budget:g}s") from None
    return live[-1]


def _wait_answers(runner: Runner, budget: float) -> None:
    deadline = time.monotonic() + budget
    try:
        wait_until(
            lambda: libvirtd_answers(runner, timeout=max(1.0, deadline - time.monotonic())),
            budget=budget,
            interval=_POLL,
            what=f"libvirtd to answer on {URI}",
        )
    except ReadinessTimeout:
        raise StackLabError(f"libvirtd started but did not answer on {URI} within {budget:g}s") from None


def stop_owned_libvirtd(*, record_dir: Path = RECORD_DIR, budget: float = 30.0) -> list[DaemonRecord]:
    """Stop the libvirtd (then virtlogd) stacklab started, if they are still those processes; returns them.

    The caller decides when (no lab uses it any more). A daemon not in the record is never signalled.
    """
    stopped: list[DaemonRecord] = []
    with file_lock(record_dir / "lock"):
        for record in sorted(owned_daemons(record_dir), key=lambda d: d.name != "libvirtd"):
            LOG.info("stopping %s (pid %d), started by stacklab", record.name, record.pid)
            _terminate(record, budget)
            stopped.append(record)
        (record_dir / RECORD_NAME).unlink(missing_ok=True)
    return stopped


def _terminate(record: DaemonRecord, budget: float) -> None:
    os.kill(record.pid, signal.SIGTERM)
    try:
        wait_until(lambda: not record.is_alive(), budget=budget, interval=_POLL, what=f"{record.name} to exit")
    except ReadinessTimeout:
        LOG.warning("%s (pid %d) ignored SIGTERM for %ss; sending SIGKILL", record.name, record.pid, budget)
        os.kill(record.pid, signal.SIGKILL)
