"""libvirtd ownership: only the very processes stacklab recorded are ever signalled."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from stacklab.drivers.nodes.libvirtd import (
    RECORD_NAME,
    DaemonRecord,
    _identity,
    host_processes_named,
    owned_daemons,
    processes_named,
    stop_owned_libvirtd,
)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    # Until the child has exec'd, /proc/PID/comm is still the parent's name: wait (bounded) for the exec.
    deadline = time.monotonic() + 10
    while b"time.sleep" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "child did not exec within 10 s"
        time.sleep(0.01)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def record_for(pid: int, name: str = "libvirtd") -> DaemonRecord:
    ident = _identity(pid)
    assert ident is not None
    return DaemonRecord(name=name, pid=pid, start_time=ident[0], exe=ident[1])


def write(record_dir: Path, **records: DaemonRecord | None) -> None:
    record_dir.mkdir(parents=True, exist_ok=True)
    data = {name: asdict(r) if r else None for name, r in records.items()}
    (record_dir / RECORD_NAME).write_text(json.dumps(data))


def test_identity_is_pid_plus_start_time_plus_exe() -> None:
    record = record_for(os.getpid())
    assert record.is_alive()
    assert not DaemonRecord(record.name, record.pid, record.start_time + 1, record.exe).is_alive()
    assert not DaemonRecord(record.name, record.pid, record.start_time, "/usr/sbin/other").is_alive()


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's /proc/<pid>/exe needs root")
def test_stop_signals_only_the_recorded_process(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    real = record_for(sleeper.pid)
    # a stale record (same pid, other start time: a recycled pid) is neither listed nor signalled
    write(tmp_path, libvirtd=DaemonRecord("libvirtd", real.pid, real.start_time - 1, real.exe), virtlogd=None)
    assert owned_daemons(tmp_path) == []
    assert stop_owned_libvirtd(record_dir=tmp_path) == []
    assert sleeper.poll() is None
    assert not (tmp_path / RECORD_NAME).exists()
    # the exact process is stopped, and the record goes with it
    write(tmp_path, libvirtd=real, virtlogd=None)
    assert owned_daemons(tmp_path) == [real]
    assert stop_owned_libvirtd(record_dir=tmp_path, budget=10) == [real]
    assert sleeper.wait(timeout=10) != 0
    assert not (tmp_path / RECORD_NAME).exists()


def test_processes_named_reads_comm(sleeper: subprocess.Popen[bytes]) -> None:
    comm = Path(f"/proc/{sleeper.pid}/comm").read_text().strip()
    assert sleeper.pid in processes_named(comm)
    assert processes_named("no-such-process-name") == []


def _fake_process(proc: Path, pid: str, comm: str, *, pid_ns: str, mnt_ns: str, root: Path) -> None:
    entry = proc / pid
    (entry / "ns").mkdir(parents=True)
    if comm:
        (entry / "comm").write_text(comm + "\n")
        (entry / "stat").write_text(f"{pid} ({comm}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n")
    (entry / "ns/pid").symlink_to(f"pid:[{pid_ns}]")
    (entry / "ns/mnt").symlink_to(f"mnt:[{mnt_ns}]")
    (entry / "root").symlink_to(root)


HOST_PID, HOST_MNT = "4026531836", "4026531841"


def test_libvirtds_inside_lab_nodes_are_not_the_hosts(tmp_path: Path) -> None:
    """Issue 11: beside the aio lab, `up labs/mixed.yml` refused with "a libvirtd is running (pid 19645, 19883) but
    does not answer": those were nova's libvirtds inside aio's compute containers (own PID and mount namespaces,
    own root). Only a daemon in stacklab's PID namespace and mount namespace (or root) is the host's; our own
    hide-KVM libvirtd, in a private mount namespace over the same root, still is."""
    proc, host_root, node_root = tmp_path / "proc", tmp_path / "hostroot", tmp_path / "noderoot"
    host_root.mkdir()
    node_root.mkdir()
    _fake_process(proc, "self", "", pid_ns=HOST_PID, mnt_ns=HOST_MNT, root=host_root)
    _fake_process(proc, "100", "libvirtd", pid_ns=HOST_PID, mnt_ns=HOST_MNT, root=host_root)  # the host's own
    _fake_process(
        proc, "19645", "libvirtd", pid_ns="4026533001", mnt_ns="4026533002", root=node_root
    )  # nova's, compute1
    _fake_process(
        proc, "19883", "libvirtd", pid_ns="4026533101", mnt_ns="4026533102", root=node_root
    )  # nova's, compute2
    _fake_process(proc, "300", "libvirtd", pid_ns=HOST_PID, mnt_ns="4026539999", root=host_root)  # ours, KVM hidden
    _fake_process(proc, "400", "libvirtd", pid_ns=HOST_PID, mnt_ns="4026538888", root=node_root)  # other root
    assert processes_named("libvirtd", proc) == [100, 300, 400, 19645, 19883]  # what `up` refused on before
    assert host_processes_named("libvirtd", proc) == [100, 300]
    for pid in ("100", "300", "19645", "19883"):
        (proc / pid / "ns/pid").unlink()  # exited meanwhile: not the host's
    assert host_processes_named("libvirtd", proc) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="new PID namespaces need root")
def test_a_process_in_another_pid_namespace_is_not_a_host_process(tmp_path: Path) -> None:
    """Real namespaces: the same program in a new PID+mount namespace (as in a lab node) is seen by name but not
    taken for the host's; in a private mount namespace only (as our hide-KVM libvirtd) it still is."""
    # A name no daemon has, unique per test process (another engineer's test run may probe at the same moment).
    comm = f"nsprobe{secrets.token_hex(4)}"
    program = tmp_path / comm
    program.write_bytes(Path("/bin/sleep").read_bytes())
    program.chmod(0o755)
    node = subprocess.Popen(["unshare", "--pid", "--mount", "--fork", "--kill-child", str(program), "60"])
    mount_only = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", str(program), "60"])
    try:
        deadline = time.monotonic() + 10
        while len(processes_named(comm)) < 2:
            assert time.monotonic() < deadline, "probes did not start within 10 s"
            time.sleep(0.02)
        in_node = [pid for pid in processes_named(comm) if pid != mount_only.pid]
        assert len(in_node) == 1 and in_node[0] != node.pid  # the forked child inside the new PID namespace
        assert host_processes_named(comm) == [mount_only.pid]
    finally:
        for child in (node, mount_only):
            child.kill()
            child.wait(timeout=10)
