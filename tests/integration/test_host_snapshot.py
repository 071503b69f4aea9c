"""take_snapshot on the real host: a veth pair made between two snapshots is exactly what leaks() reports.

This one works in the host netns (that is what the snapshot reads); the pair is deleted in the finalizer.
Other processes on the host may create objects concurrently; the names here are random so a clash is
impossible, but a host object made by someone else in the same half second would show up as an extra leak.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from stacklab.exec.runner import LocalRunner
from stacklab.host.snapshot import Leak, leaks, take_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.root]


@pytest.fixture
def veth_names() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (uid 0) to create interfaces")
    tag = secrets.token_hex(3)
    names = (f"sltv{tag}a", f"sltv{tag}b")
    try:
        yield names
    finally:
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=names[0]):
                ipr.link("del", index=index)  # deletes the peer too


def test_veth_pair_made_during_the_lab_is_the_only_leak(veth_names: tuple[str, str]) -> None:
    runner = LocalRunner()
    marker = f"sltest{secrets.token_hex(3)}"
    before = take_snapshot(runner)
    with IPRoute() as ipr:
        ipr.link("add", ifname=veth_names[0], kind="veth", peer=veth_names[1])
    after = take_snapshot(runner)
    assert leaks(before, after, lab_markers=[marker]) == [Leak("interface", n) for n in sorted(veth_names)]
    assert leaks(before, take_snapshot(runner), lab_markers=[marker]) == leaks(before, after, lab_markers=[marker])


def test_processes_started_for_the_lab_leak_and_others_do_not() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (uid 0) to read other processes' /proc entries")
    runner = LocalRunner()
    marker = f"sltest{secrets.token_hex(3)}"
    before = take_snapshot(runner)
    # a "daemon" whose argv names the lab, with a child that does not; and an unrelated process
    lab = subprocess.Popen(["sh", "-c", "sleep 30 & wait", marker])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    children: list[int] = []
    try:
        found: list[Leak] = []
        # the shell forks its sleep child asynchronously, and between fork and exec the child is still "sh"
        # with the shell's cmdline: wait until it has become sleep
        for _ in range(100):
            snap = take_snapshot(runner)
            kids = [p for p in snap.processes if p.ppid == lab.pid]
            children = [p.pid for p in kids]
            found = leaks(before, snap, lab_markers=[marker])
            if kids and all(p.comm == "sleep" for p in kids) and len(found) >= 2:
                break
            time.sleep(0.05)
        assert len(children) == 1
        assert [str(leak) for leak in found] == [
            f"process {lab.pid} sh (started during the lab; cmdline mentions {marker!r})",
            f"process {children[0]} sleep (started during the lab; ancestor {lab.pid} sh mentions {marker!r})",
        ]
        assert not any(leak.object.startswith(f"{other.pid} ") for leak in found)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in (lab, other):
            process.kill()
            process.wait(timeout=10)
