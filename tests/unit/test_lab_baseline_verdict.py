"""The lab-baseline check is a test of its own in pytest's counts and JUnit XML (verify's table and HTML read it):
before, a leftover failed the session while the summary still said "N passed" and the report had no trace of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stacklab.suites.report import parse_junit

PLUGIN = """
import pytest
from stacklab.suites import lab_baseline

@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    lab_baseline.log_verdict(session, LEFT)
"""


def _run(tmp_path: Path, left: list[str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "conftest.py").write_text(f"LEFT = {left!r}\n" + PLUGIN)
    (tmp_path / "test_suite.py").write_text("def test_a_flow():\n    assert True\n")
    junit = tmp_path / "out.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={junit}", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc, junit


def test_a_leftover_is_a_failed_test_in_the_counts_and_the_junit(tmp_path: Path) -> None:
    proc, junit = _run(tmp_path, ["volume stacklab-leak 1234"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout
    cases = {c.name: c for c in parse_junit(junit)}
    verdict = cases["the_lab_is_as_before_the_suites"]
    assert verdict.outcome == "failed"
    assert "volume stacklab-leak 1234" in verdict.message
    assert verdict.suite == "lab_baseline"


def test_a_clean_lab_is_a_passed_test(tmp_path: Path) -> None:
    proc, junit = _run(tmp_path, [])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout, proc.stdout
    outcomes = {c.name: c.outcome for c in parse_junit(junit)}
    assert outcomes == {"test_a_flow": "passed", "the_lab_is_as_before_the_suites": "passed"}
