"""The mixed lab (labs/mixed.yml: one VM node beside two container nodes) through the CLI: `up`, the VM answers
SSH with the lab key, has its addresses on both bridges and reaches a container over br-storage, then `down`
with a clean leak check.

The lab file is labs/mixed.yml copied to tmp_path with a unique name and unique subnets (beside links to the
checkout's images/ and cloud-init/, which lab files are resolved against). The state dir is under /var/tmp, not
tmp_path: QEMU runs as libvirt-qemu and must be able to search the directories above its disks. `down` runs in
a finalizer, also when the test fails, and must report zero leaks. One TCG VM boot: about 40-90 s here.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacklab.drivers.nodes.vm_ready import ReadyTarget, ssh_argv
from stacklab.exec.runner import LocalRunner
from tests.integration.lab_cli import ROOT, stacklab, vm_lab_marks

STATE_BASE = Path("/var/tmp/stacklab-mixed-test")  # searchable by libvirt-qemu (pytest's tmp_path is not)

pytestmark = vm_lab_marks(1500, containers=True)


@dataclass
class MixedLab:
    name: str
    file: Path
    state: Path

    def record(self, resource_id: str) -> dict[str, Any]:
        data = json.loads((self.state / self.name / "state.json").read_text())
        record: dict[str, Any] = data["resources"][resource_id]
        return record


@pytest.fixture
def mixed_lab(tmp_path: Path) -> Iterator[MixedLab]:
    token = secrets.token_hex(3)
    doc = yaml.safe_load((ROOT / "labs" / "mixed.yml").read_text())
    doc["name"] = f"mix-{token}"
    octet = 100 + secrets.randbelow(50)
    third = secrets.randbelow(250)
    doc["networks"]["mgmt"]["cidr"] = f"10.{octet}.{third}.0/24"
    doc["networks"]["storage"]["cidr"] = f"10.{octet + 50}.{third}.0/24"
    for name in ("images", "cloud-init"):
        (tmp_path / name).symlink_to(ROOT / name)
    lab_file = tmp_path / f"{doc['name']}.yml"
    lab_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    STATE_BASE.mkdir(parents=True, exist_ok=True)
    STATE_BASE.chmod(0o755)
    state = STATE_BASE / token
    state.mkdir()
    state.chmod(0o755)
    lab = MixedLab(doc["name"], lab_file, state)
    try:
        yield lab
    finally:
        down = stacklab(state, "down", lab.name, check=False, timeout=600)
        if down.ok:
            shutil.rmtree(state, ignore_errors=True)  # only the kept event logs are left
        assert down.ok and "leak check: clean" in down.stderr, f"down -> {down.returncode}\n{down.stderr[-4000:]}"


def test_mixed_lab_vm_reaches_containers_and_leaves_nothing(mixed_lab: MixedLab) -> None:
    started = time.monotonic()
    stacklab(mixed_lab.state, "up", "-y", str(mixed_lab.file))
    up_seconds = time.monotonic() - started

    vm = mixed_lab.record("node/vm1")
    outputs, spec = vm["outputs"], vm["spec"]
    assert outputs["kind"] == "vm"
    ssh = outputs["ssh"]
    target = ReadyTarget("vm1", ssh["host"], ssh["user"], ssh["port"], ssh["key"], Path(), lambda: True)
    runner = LocalRunner()

    # the lab key logs in (BatchMode, IdentitiesOnly: no other key or password can), and the guest has the spec's
    # address on the NIC of each network
    addrs = runner.run(ssh_argv(target, ["ip", "-j", "-4", "addr", "show"]), timeout=60)
    by_device = {
        link["ifname"]: {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])}
        for link in json.loads(addrs.stdout)
    }
    for nic in spec["nics"]:
        assert nic["address"] in by_device.get(nic["device"], set()), (nic, by_device)
        # host side: the VM's tap for that NIC is a port of the network's bridge
        link = runner.run(["ip", "-j", "link", "show", nic["host_ifname"]], timeout=30)
        assert json.loads(link.stdout)[0].get("master") == nic["bridge"], nic

    # the VM reaches a container over br-storage
    container = mixed_lab.record("node/ct1")
    storage_address = container["outputs"]["addresses"]["storage"]
    storage_nic = next(n for n in spec["nics"] if n["network"] == "storage")
    ping = runner.run(
        ssh_argv(target, ["ping", "-c", "3", "-W", "5", "-I", storage_nic["device"], storage_address]),
        timeout=60,
        check=False,
    )
    assert ping.ok and " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
    print(f"mixed lab up in {up_seconds:.1f} s; VM ready {outputs['ready_seconds']} s after its start")
