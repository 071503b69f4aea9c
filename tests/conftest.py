"""Shared fixtures and capability probes: tests that need root, a daemon or KVM skip with the reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "labs"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`root`-marked tests skip unless uid 0; `kvm` ones unless KVM really runs guests (probed once)."""
    is_root = os.geteuid() == 0
    kvm_reason: str | None = None
    kvm_checked = False
    for item in items:
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (uid 0)"))
        if "kvm" in item.keywords:
            if not kvm_checked:
                kvm_reason = _kvm_unusable_reason()
                kvm_checked = True
            if kvm_reason:
                item.add_marker(pytest.mark.skip(reason=kvm_reason))


def _kvm_unusable_reason() -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not installed; cannot prove KVM runs guests"
    from stacklab.exec.runner import LocalRunner
    from stacklab.host.kvm_probe import probe_kvm

    qemu = shutil.which("qemu-system-x86_64")
    status = probe_kvm(LocalRunner(), device_present=Path("/dev/kvm").exists(), qemu=qemu)
    return None if status.usable_for_guests else f"KVM cannot run guests here: {status.reason}"


@pytest.fixture
def labs_dir() -> Path:
    return LABS
