"""libvirtd ownership: only the very processes stacklab recorded are ever signalled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from stacklab.drivers.libvirtd import (
    RECORD_NAME,
    DaemonRecord,
    _identity,
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
