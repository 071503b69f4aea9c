"""A checkpoint of a lab with a VM node through the CLI: one TCG VM (with a data disk) beside one container.

Up; write a marker file in the VM's root file system and known bytes at the head of its data disk (synced); save
(the VM is shut down through ACPI, its qcow2 files copied, started again); change the VM (delete the marker, write
another file, overwrite the data disk's head); restore; and prove over SSH, with the lab's known_hosts (a changed
host key fails the login), that the marker and the data disk's bytes are back, the other file is gone, the host
key is the same, and the guest booted again (a new boot id) from the restored overlay. The save/restore times and
the checkpoint's disk use (apparent vs allocated) are printed. Down with a clean leak check in a finalizer.

The state dir is under /var/tmp (QEMU runs as libvirt-qemu and must search the directories above its disks). On a
loaded host a TCG boot takes minutes: set STACKLAB_VM_READY_SECONDS (it applies to `up` and to the restarts of a
save and a restore).

Nightly, not CI: three TCG boots of the VM (up, the save's restart, the restore's) took 11.7 min at load 9-13 on
this 2-core host, which CI's 90 minutes (about 70 used) cannot take. Runs only with STACKLAB_NIGHTLY=1; skipped with
that reason otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.lab_cli import ROOT, stacklab, vm_lab_marks

STATE_BASE = Path("/var/tmp/stacklab-ckvm-test")

NIGHTLY = os.environ.get("STACKLAB_NIGHTLY") == "1"

pytestmark = [
    *vm_lab_marks(3600, containers=True),
    pytest.mark.skipif(not NIGHTLY, reason="nightly (three TCG boots of a VM, ~12 min): set STACKLAB_NIGHTLY=1"),
]

LAB = """
name: {name}
description: one VM with a data disk and one container, for checkpoints of VM nodes
networks:
  mgmt: {{bridge: br-mgmt, cidr: 10.252.{third}.0/24}}
  storage: {{bridge: br-storage, cidr: 10.252.{third2}.0/24}}
images:
  base: {{recipe: debian-12-base}}
nodes:
  vm1:
    kind: vm
    image: base
    cpus: 1
    memory: 1GiB
    nics: [mgmt, storage]
    disks: [{{name: data, size: 256MiB}}]
  ct1: {{kind: container, image: base, nics: [mgmt, storage]}}
"""


@dataclass
class VmLab:
    name: str
    file: Path
    state: Path

    def vm(self, command: str) -> str:
        return stacklab(self.state, "ssh", self.name, "vm1", command, timeout=600).stdout


@pytest.fixture
def vm_lab(tmp_path: Path) -> Iterator[VmLab]:
    token = secrets.token_hex(3)
    third = 100 + 2 * secrets.randbelow(60)
    name = f"ckvm-{token}"
    for link in ("images", "cloud-init"):
        (tmp_path / link).symlink_to(ROOT / link)
    lab_file = tmp_path / f"{name}.yml"
    lab_file.write_text(LAB.format(name=name, third=third, third2=third + 1))
    STATE_BASE.mkdir(parents=True, exist_ok=True)
    STATE_BASE.chmod(0o755)
    state = STATE_BASE / token
    state.mkdir()
    state.chmod(0o755)
    lab = VmLab(name, lab_file, state)
    try:
        yield lab
    finally:
        down = stacklab(state, "down", name, check=False, timeout=900)
        if down.ok:
            shutil.rmtree(state, ignore_errors=True)
        assert down.ok and "leak check: clean" in down.stderr, f"down -> {down.returncode}\n{down.stderr[-4000:]}"


def facts(lab: VmLab, disk: str) -> dict[str, str]:
    """What the restore must bring back (or, for the boot id, change), read in the VM: `key value` lines."""
    out = lab.vm(
        "echo marker $(cat /root/ck-marker 2>/dev/null || echo absent); "
        "echo after $(test -e /root/ck-after && echo present || echo absent); "
        f"echo disk $(head -c 32 {disk} | tr -c 'a-z0-9-' '.'); "
        "echo hostkey $(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2); "
        "echo boot $(cat /proc/sys/kernel/random/boot_id)"
    )
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def du_bytes(path: Path, *apparent: str) -> int:
    out = subprocess.run(["du", "-s", "-B1", *apparent, str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def test_save_change_restore_a_vm_node(vm_lab: VmLab) -> None:
    lab = vm_lab
    began = time.monotonic()
    stacklab(lab.state, "up", "-y", str(lab.file), timeout=3000)
    up_seconds = time.monotonic() - began
    record = json.loads((lab.state / lab.name / "state.json").read_text())["resources"]["node/vm1"]
    disk = record["outputs"]["disks"]["data"]
    marker = secrets.token_hex(8)
    lab.vm(f"echo {marker} > /root/ck-marker && printf 'disk-{marker}' | dd of={disk} conv=fsync status=none && sync")
    before = facts(lab, disk)
    assert before["marker"] == marker and before["after"] == "absent", before
    assert before["disk"].startswith(f"disk-{marker}"), before

    began = time.monotonic()
    saved = stacklab(lab.state, "checkpoint", "save", lab.name, "base", timeout=3000)
    save_seconds = time.monotonic() - began
    assert f"checkpoint base of lab {lab.name} saved: 2 nodes" in saved.stderr, saved.stderr[-2000:]
    listed = json.loads(stacklab(lab.state, "checkpoint", "list", "--json", lab.name).stdout)
    (info,) = listed["checkpoints"]
    assert {n["name"]: n["kind"] for n in info["nodes"]} == {"vm1": "vm", "ct1": "container"}
    assert "vm" in info["entries"]
    data = lab.state / lab.name / "checkpoints" / "base" / "data"
    assert (data / "vm" / "pool" / "vm1.root.qcow2").is_file() and (
        data / "vm" / "pool" / "vm1.disk-data.qcow2"
    ).is_file()
    after_save = facts(lab, disk)
    assert after_save["boot"] != before["boot"], "the save did not shut the VM down and start it again"
    assert {k: v for k, v in after_save.items() if k != "boot"} == {k: v for k, v in before.items() if k != "boot"}

    lab.vm(
        f"rm /root/ck-marker && echo changed > /root/ck-after && printf 'overwritten-after-save' | dd of={disk} "
        "conv=fsync status=none && sync"
    )
    changed = facts(lab, disk)
    assert changed["marker"] == "absent" and changed["after"] == "present", changed
    assert changed["disk"].startswith("overwritten"), changed

    began = time.monotonic()
    restored = stacklab(lab.state, "checkpoint", "restore", lab.name, "base", timeout=3000)
    restore_seconds = time.monotonic() - began
    assert f"lab {lab.name} restored to checkpoint base" in restored.stderr, restored.stderr[-2000:]
    back = facts(lab, disk)
    assert back["marker"] == marker and back["after"] == "absent", back
    assert back["disk"] == before["disk"] and back["hostkey"] == before["hostkey"], (back, before)
    assert back["boot"] not in (before["boot"], after_save["boot"], changed["boot"]), "the VM was not rebooted"
    again = stacklab(lab.state, "up", "-y", str(lab.file), timeout=900)
    assert "nothing to do" in again.stderr, f"the restored lab is not converged:\n{again.stderr[-3000:]}"

    checkpoint_dir = lab.state / lab.name / "checkpoints" / "base"
    apparent, allocated = du_bytes(checkpoint_dir, "--apparent-size"), du_bytes(checkpoint_dir)
    vm_files = du_bytes(data / "vm")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"\nVM checkpoint figures (load {' '.join(load)}): up {up_seconds:.1f} s; "
        f"save {save_seconds:.1f} s ({saved.stderr.strip().splitlines()[-1]}); "
        f"restore {restore_seconds:.1f} s ({restored.stderr.strip().splitlines()[-1]}); "
        f"checkpoint {apparent / 2**20:.1f} MiB apparent, {allocated / 2**20:.1f} MiB allocated "
        f"(VM files {vm_files / 2**20:.1f} MiB allocated)"
    )
    stacklab(lab.state, "checkpoint", "delete", lab.name, "base")
