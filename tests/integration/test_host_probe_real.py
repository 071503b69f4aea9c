"""The KVM guest probe and probe_host on this very host, with a real QEMU.

The TCG runs prove the probe itself: the boot sector makes QEMU exit 3 where a guest really runs, and a
sector that never writes the port is reported as a hang. Only then does the KVM verdict mean something.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from stacklab.exec.runner import LocalRunner
from stacklab.host import boot_probe, choose_all, probe_host, probe_kvm
from stacklab.host.kvm_probe import EXPECTED_EXIT, QEMU

LOG = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

QEMU_PATH = shutil.which(QEMU) or (f"/usr/bin/{QEMU}" if Path(f"/usr/bin/{QEMU}").exists() else None)
needs_qemu = pytest.mark.skipif(
    QEMU_PATH is None,
    reason=f"{QEMU} not installed (apt-get install --no-install-recommends qemu-system-x86 qemu-utils)",
)
# a sector that halts forever: cli; hlt; jmp $-2
SILENT_SECTOR = bytes([0xFA, 0xF4, 0xEB, 0xFD]) + bytes(506) + b"\x55\xaa"


@needs_qemu
def test_boot_sector_runs_under_tcg(tmp_path: Path) -> None:
    assert QEMU_PATH is not None
    probe = boot_probe(LocalRunner(), accel="tcg", qemu=QEMU_PATH, timeout=30, workdir=tmp_path)
    assert probe.returncode == EXPECTED_EXIT, probe.reason
    assert probe.ran


@needs_qemu
def test_a_guest_that_never_exits_is_reported_as_a_hang(tmp_path: Path) -> None:
    assert QEMU_PATH is not None
    probe = boot_probe(LocalRunner(), accel="tcg", qemu=QEMU_PATH, timeout=3, workdir=tmp_path, sector=SILENT_SECTOR)
    assert not probe.ran
    assert probe.returncode is None
    assert probe.reason == "a test guest under tcg did not finish within 3s (hangs)"


@needs_qemu
@pytest.mark.skipif(not Path("/dev/kvm").exists(), reason="/dev/kvm is absent")
def test_kvm_probe_gives_a_verdict_with_a_reason(tmp_path: Path) -> None:
    status = probe_kvm(LocalRunner(), device_present=True, qemu=QEMU_PATH, workdir=tmp_path)
    LOG.info("KVM on this host: usable=%s: %s", status.usable_for_guests, status.reason)
    assert status.device_present
    assert status.usable_for_guests is not None
    if status.usable_for_guests:
        assert status.reason == "a test guest ran under kvm (exit 3 from isa-debug-exit)"
    else:  # the reason names what QEMU said, or the hang
        assert status.reason.startswith("a test guest under kvm did not")
        assert "QEMU" in status.reason or "hangs" in status.reason


def test_probe_host_on_this_host(tmp_path: Path) -> None:
    report = probe_host(LocalRunner(), disk_path=tmp_path)
    LOG.info("host report: %s", report.to_json())
    assert report.cpu_count >= 1
    assert report.mem_available_bytes is not None and report.mem_available_bytes > 0
    assert report.disk_free_bytes is not None and report.disk_free_bytes > 0
    assert report.cgroup in ("v1", "v2", "hybrid", "none")
    assert report.tools["ip"] is not None or shutil.which("ip") is None
    if report.kvm.device_present and QEMU_PATH is not None:
        assert report.kvm.usable_for_guests is not None
    choices = choose_all(report, {})
    # the picks follow the report: VMs only where KVM was seen to run a guest
    assert (choices["node_kind"].implementation == "vm") == bool(report.kvm.usable_for_guests)
    assert (choices["iscsi_target"].implementation == "lio") == report.lio_target.available
