"""Shared by the whole-lab tests: the checkout root, the marks of container labs, and the CLI as a subprocess."""

from __future__ import annotations

import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from stacklab.exec.runner import CommandResult, LocalRunner

ROOT = Path(__file__).resolve().parents[2]

# Marks of every whole-lab test made of container nodes.
CONTAINER_LAB_MARKS = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("lxc-start") is None, reason="lxc is not installed"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed"),
]


# Host tools a lab with VM nodes needs (libvirt, QEMU, the ext4 disk build, SSH).
VM_TOOLS = ("qemu-system-x86_64", "libvirtd", "virtlogd", "virsh", "qemu-img", "mkfs.ext4", "debugfs", "ssh")


def vm_lab_marks(timeout: int, *, containers: bool = False) -> list[pytest.MarkDecorator]:
    """Marks of every whole-lab test with VM nodes (and LXC containers when `containers`): integration, root,
    slow, the test's timeout, and a skip naming each missing tool."""
    marks = [
        pytest.mark.integration,
        pytest.mark.root,
        pytest.mark.slow,
        pytest.mark.timeout(timeout),
        pytest.mark.skipif(os.geteuid() != 0, reason="needs root (uid 0): bridges and libvirt"),
        pytest.mark.skipif(
            any(shutil.which(tool) is None for tool in VM_TOOLS),
            reason="VM nodes need " + ", ".join(VM_TOOLS) + " (libvirt-daemon-system qemu-utils e2fsprogs ssh)",
        ),
        pytest.mark.skipif(
            shutil.which("genisoimage") is None and shutil.which("xorriso") is None,
            reason="VM seeds need genisoimage or xorriso",
        ),
        pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed (image builds)"),
    ]
    if containers:
        marks.append(pytest.mark.skipif(shutil.which("lxc-start") is None, reason="lxc is not installed"))
    return marks


def stacklab(state: Path, *args: str, check: bool = True, timeout: float = 900) -> CommandResult:
    """`python -m stacklab ARGS` with its state under `state`; asserts success (with stderr) unless check=False."""
    result = LocalRunner().run(
        [sys.executable, "-m", "stacklab", *args],
        timeout=timeout,
        check=False,
        env={"STACKLAB_STATE": str(state)},
        cwd=ROOT,
    )
    if check:
        assert result.ok, f"stacklab {' '.join(args)} -> {result.returncode}\n{result.stderr[-4000:]}"
    return result


def unique_lab_file(template: str, prefix: str) -> tuple[str, Path]:
    """A copy of labs/<template>.yml with a unique name and unique /24s (beside the checkout's images/, which lab
    files resolve against): (name, path). Remove the file when done."""
    from stacklab.model.starter import unique_copy

    name, text = unique_copy((ROOT / "labs" / f"{template}.yml").read_text(), prefix)
    lab_file = ROOT / ".stacklab" / "e2e" / f"{name}.yml"
    lab_file.parent.mkdir(parents=True, exist_ok=True)
    lab_file.write_text(text)
    return name, lab_file


@dataclass(frozen=True)
class LabCopy:
    state: Path
    name: str
    file: Path

    def up_twice_and_verify(self, *suites: str, keyword: str | None = None) -> CommandResult:
        """`up`, then a second `up` that must change nothing, then `verify` of `suites` (only the tests matching the
        pytest -k `keyword`, when given) with nothing skipped."""
        stacklab(self.state, "up", "-y", str(self.file))
        again = stacklab(self.state, "up", "-y", str(self.file))
        assert "nothing to do" in again.stderr, f"a second up changed something:\n{again.stderr[-3000:]}"
        args = [arg for suite in suites for arg in ("--suite", suite)]
        args += ["-k", keyword] if keyword else []
        report = stacklab(self.state, "verify", self.name, *args, check=False)
        assert report.ok, f"suites {', '.join(suites)} failed:\n{report.stdout[-6000:]}"
        assert " passed" in report.stdout and "skipped" not in report.stdout, report.stdout[-2000:]
        return report

    def down_clean(self) -> None:
        down = stacklab(self.state, "down", self.name)
        assert "leak check: clean" in down.stderr, down.stderr[-3000:]


@contextmanager
def lab_copy(tmp_path: Path, template: str, prefix: str) -> Iterator[LabCopy]:
    """A unique copy of labs/<template>.yml with its state under tmp_path; taken down even when the test fails."""
    name, lab_file = unique_lab_file(template, prefix)
    copy = LabCopy(tmp_path / "state", name, lab_file)
    try:
        yield copy
    finally:
        stacklab(copy.state, "down", "--no-leak-check", name, check=False)
        lab_file.unlink(missing_ok=True)


@contextmanager
def vm_lab_copy(template: str, prefix: str, state_base: Path) -> Iterator[LabCopy]:
    """A unique copy of labs/<template>.yml with VM nodes, its state under `state_base` (libvirt-qemu must search
    it; pytest's tmp_path is not searchable); taken down (the test checks the leaks itself) and removed even when
    the test fails."""
    import secrets

    name, lab_file = unique_lab_file(template, prefix)
    state = state_base / secrets.token_hex(4)
    state.mkdir(parents=True, mode=0o755)
    copy = LabCopy(state, name, lab_file)
    try:
        yield copy
    finally:
        stacklab(state, "down", "--no-leak-check", name, check=False)
        lab_file.unlink(missing_ok=True)
        shutil.rmtree(state, ignore_errors=True)


def junit_outcomes(path: Path) -> dict[str, str]:
    """Test name -> passed/failed/skipped from verify's JUnit report."""
    out: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        out[str(case.get("name"))] = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
    return out


def nightly_up_verify_down(
    lab: LabCopy,
    label: str,
    suites: Sequence[str],
    cases: Sequence[str],
    *,
    what: str,
    up_timeout: float,
    verify_timeout: float,
    before_down: Callable[[], str] | None = None,
) -> None:
    """The nightly VM-lab run: `up`, a second `up` that must plan nothing, `verify` of `suites` that must pass with
    every one of `cases` (JUnit names) passed (`what` names them in the failure), then `down` with a clean leak
    check. Prints each phase's wall time after `label`, then what `before_down` (run while the lab is still
    up) returns."""

    times: dict[str, float] = {}
    start = time.monotonic()
    stacklab(lab.state, "up", "-y", str(lab.file), timeout=up_timeout)
    times["up"] = time.monotonic() - start
    again = stacklab(lab.state, "up", "-y", str(lab.file), timeout=900)
    assert "nothing to do" in again.stderr, f"a second up changed something:\n{again.stderr[-3000:]}"

    start = time.monotonic()
    args = [arg for suite in suites for arg in ("--suite", suite)]
    report = stacklab(lab.state, "verify", lab.name, *args, check=False, timeout=verify_timeout)
    times["verify"] = time.monotonic() - start
    assert report.ok, f"verify failed:\n{report.stdout[-6000:]}\n{report.stderr[-2000:]}"
    # verify's own reports are named by their time; tempest-<time>.xml beside them is tempest's
    outcomes = junit_outcomes(sorted((lab.state / lab.name / "verify").glob("[0-9]*.xml"))[-1])
    not_passed = {case: outcomes.get(case, "missing") for case in cases if outcomes.get(case) != "passed"}
    assert not not_passed, f"{what} cases that did not pass: {not_passed}"
    extra = before_down() if before_down is not None else ""

    start = time.monotonic()
    lab.down_clean()
    times["down"] = time.monotonic() - start
    print(f"{label}: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in times.items()) + extra)


def vm_memory(lab: LabCopy, *nodes: str) -> str:
    """'; VM memory in use: NODE N MiB, ...': MemTotal - MemAvailable inside each VM node, over SSH."""
    used = []
    for node in nodes:
        out = stacklab(lab.state, "ssh", lab.name, node, "cat /proc/meminfo").stdout
        fields = {line.split(":")[0]: int(line.split()[1]) for line in out.splitlines() if ":" in line}
        used.append(f"{node} {(fields['MemTotal'] - fields['MemAvailable']) // 1024} MiB")
    return "; VM memory in use: " + ", ".join(used)
