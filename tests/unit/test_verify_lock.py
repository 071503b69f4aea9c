"""The lab lock: `verify`, `up` and `down` of one lab exclude each other. A second run fails at once naming the
holder (pid, command line, since when) or, with a wait, says whom it waits for and gives up at its bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacklab import verify
from stacklab.engine.state import lab_lock, lock_holder_text
from stacklab.errors import LockedError

HOLDER = """
import sys, time
from collections.abc import Iterator
from pathlib import Path
from stacklab.engine.state import lab_lock
with lab_lock(Path(sys.argv[1]), command="stacklab verify demo --suite evacuation"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def held_by_another_process(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A separate process (as a nightly `verify` would be) holding the lock of lab `demo`."""
    lab_dir = tmp_path / "state" / "demo"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lab_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield lab_dir, proc
    proc.kill()
    proc.wait(10)


def test_a_second_run_fails_at_once_naming_the_holder(
    held_by_another_process: tuple[Path, subprocess.Popen[str]],
) -> None:
    lab_dir, proc = held_by_another_process
    started = time.monotonic()
    with pytest.raises(LockedError) as err, lab_lock(lab_dir):
        pass
    assert time.monotonic() - started < 2.0
    text = str(err.value)
    assert f"pid {proc.pid}" in text and "`stacklab verify demo --suite evacuation`" in text and "since " in text


def test_verify_takes_the_lab_lock(
    held_by_another_process: tuple[Path, subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: verify took no lock and ran its suites beside an `up`, a `down` or another verify of the lab.
    lab_dir, proc = held_by_another_process
    (lab_dir / "state.json").write_text(json.dumps({"version": 1, "lab": "demo", "resources": {}}))
    (lab_dir / "ssh_config").write_text("")
    ran: list[object] = []
    monkeypatch.setattr(verify, "_run", lambda *args: ran.append(args))
    with pytest.raises(LockedError, match=f"pid {proc.pid}") as busy:
        verify.run_suites("demo", lab_dir.parent, ["infra"])
    assert not ran, "verify ran its suites while another run held the lab's lock"
    assert busy.value.exit_code == 4, "a busy lab is neither 'apply failed' (1) nor 'invalid lab' (2)"
    proc.kill()
    proc.wait(10)
    verify.run_suites("demo", lab_dir.parent, ["infra"])  # the lock went away with its holder
    assert len(ran) == 1


def test_a_waiting_run_says_whom_it_waits_for_and_gives_up_at_its_bound(
    held_by_another_process: tuple[Path, subprocess.Popen[str]],
) -> None:
    lab_dir, proc = held_by_another_process
    said: list[str] = []
    started = time.monotonic()
    with pytest.raises(LockedError, match=r"after waiting 1s"), lab_lock(lab_dir, wait=1.0, on_wait=said.append):
        pass
    assert 0.9 <= time.monotonic() - started < 5.0
    assert said and f"pid {proc.pid}" in said[0] and "waiting up to" in said[0]


def test_a_waiting_run_gets_the_lock_when_the_holder_finishes(tmp_path: Path) -> None:
    lab_dir = tmp_path / "demo"
    release = threading.Event()

    def hold() -> None:
        with lab_lock(lab_dir, command="stacklab up lab.yml"):
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    threading.Timer(0.5, release.set).start()
    said: list[str] = []
    with lab_lock(lab_dir, wait=10.0, on_wait=said.append, command="stacklab verify demo"):
        record = json.loads((lab_dir / "lock").read_text())
    holder.join(5)
    assert said and "`stacklab up lab.yml`" in said[0]
    assert record["pid"] == os.getpid() and record["command"] == "stacklab verify demo"


def test_holder_text_reads_old_and_half_written_records() -> None:
    assert lock_holder_text("1234") == "pid 1234"
    assert lock_holder_text("") == "pid unknown"
    now = json.dumps({"pid": 7, "command": "stacklab down demo", "since": time.time() - 5})
    assert lock_holder_text(now).startswith("pid 7 (`stacklab down demo`, since ")
