"""Shared by the whole-lab tests: the checkout root, the marks of container labs, and the CLI as a subprocess."""

from __future__ import annotations

import shutil
import sys
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
