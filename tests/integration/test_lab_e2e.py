"""Whole container labs through the CLI: two labs side by side, a killed `up` resumed, zero-change re-up,
`verify` over SSH, and `down` with a clean leak check. Each lab has a unique name and subnet and is removed in a
finalizer even when the test fails."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab_cli import CONTAINER_LAB_MARKS, ROOT, stacklab

CACHE = Path(os.environ.get("STACKLAB_IMAGE_CACHE", "/var/cache/stacklab/images"))
pytestmark = CONTAINER_LAB_MARKS


class Lab:
    def __init__(self, state: Path, nodes: int) -> None:
        self.name = f"e2e-{secrets.token_hex(3)}"
        octet = 150 + secrets.randbelow(50)
        self.state = state
        self.file = ROOT / ".stacklab" / "e2e" / f"{self.name}.yml"
        self.file.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            f"name: {self.name}",
            "networks:",
            f"  mgmt: {{bridge: br-mgmt, cidr: 10.{octet}.{secrets.randbelow(250)}.0/24}}",
            f"  storage: {{bridge: br-storage, cidr: 10.{octet + 50}.{secrets.randbelow(250)}.0/24}}",
            "images:",
            "  base: {recipe: debian-12-base}",
            "nodes:",
        ]
        lines += [f"  n{i}: {{kind: container, image: base, nics: [mgmt, storage]}}" for i in range(1, nodes + 1)]
        self.file.write_text("\n".join(lines) + "\n")

    def cleanup(self) -> None:
        stacklab(self.state, "down", "--no-leak-check", self.name, check=False)
        self.file.unlink(missing_ok=True)


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[object]:
    labs: list[Lab] = []

    def factory(nodes: int = 3) -> Lab:
        lab = Lab(tmp_path / "state", nodes)
        labs.append(lab)
        return lab

    yield factory
    for lab in labs:
        lab.cleanup()


def test_two_labs_side_by_side_then_down_without_leaks(make_lab) -> None:  # type: ignore[no-untyped-def]
    first, second = make_lab(3), make_lab(2)
    stacklab(first.state, "up", "-y", str(first.file))
    stacklab(second.state, "up", "-y", str(second.file))
    for lab in (first, second):
        again = stacklab(lab.state, "up", "-y", str(lab.file))
        assert "nothing to do" in again.stderr, again.stderr
        report = stacklab(lab.state, "verify", lab.name, "--suite", "infra")
        assert " passed" in report.stdout and "failed" not in report.stdout
    down = stacklab(first.state, "down", first.name)
    assert "leak check: clean" in down.stderr
    # The second lab is untouched by the first one's down.
    assert "passed" in stacklab(second.state, "verify", second.name, "--suite", "infra").stdout
    assert "leak check: clean" in stacklab(second.state, "down", second.name).stderr


def test_killed_up_resumes_and_converges(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab = make_lab(3)
    env = {**os.environ, "STACKLAB_STATE": str(lab.state)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stacklab", "up", "-y", str(lab.file)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # kill it once nodes are being created
        if "create node/" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    resumed = stacklab(lab.state, "up", "-y", str(lab.file))
    assert "create node/" in resumed.stderr or "update node/" in resumed.stderr or "nothing to do" in resumed.stderr
    assert "nothing to do" in stacklab(lab.state, "up", "-y", str(lab.file)).stderr
    assert "passed" in stacklab(lab.state, "verify", lab.name, "--suite", "infra").stdout
    assert "leak check: clean" in stacklab(lab.state, "down", lab.name).stderr
