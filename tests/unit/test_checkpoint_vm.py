"""Checkpoints of labs with VM nodes (engine/vm_quiesce.py through quiesce.py and checkpoint.py).

The containers' lxc-* commands are the Lxc fake of test_checkpoint.py; the VM's `virsh` calls and the SSH probes
of its readiness wait (vm_ready.wait_ready, the real one) are scripted here, keeping each domain's state and the
order of events. `cp` runs for real, so the VM files saved and restored are what the real copy does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stacklab.engine.checkpoint import COPY_ARGV, CheckpointError, Checkpoints
from stacklab.engine.lab_nodes import lab_nodes
from stacklab.engine.quiesce import Quiescer, start_tiers
from stacklab.engine.vm_quiesce import VmPower, VmShutdownError
from stacklab.errors import EXIT_INVALID_LAB, StackLabError
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult
from tests.unit.test_checkpoint import LAB, Lxc, make_lab

URI = "qemu:///system"
VM = "vm1"
DOMAIN = f"stacklab-{LAB}-{VM}"
VM_HOST = "10.9.9.50"


class Virsh(Lxc):
    """Lxc's containers plus one libvirt domain: domstate/shutdown/destroy/start change it; SSH to the VM answers
    while it runs. `acpi_ignored`: the guest never acts on the power button."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        self.domains = {DOMAIN: "running"}
        self.acpi_ignored = False
        self.presses = 0

    def runner(self) -> FakeRunner:
        fake = super().runner()
        fake.expect(["virsh", "-c", URI, "uri"], stdout=f"{URI}\n")
        fake.expect(["virsh", "-c", URI, "domstate"], responder=self._domstate)
        fake.expect(["virsh", "-c", URI, "shutdown"], responder=self._shutdown)
        fake.expect(["virsh", "-c", URI, "destroy"], responder=self._destroy)
        fake.expect(["virsh", "-c", URI, "start"], responder=self._vstart)
        fake.expect(["ssh"], responder=self._ssh)
        return fake

    def _ok(self, argv: tuple[str, ...], out: str = "") -> CommandResult:
        return CommandResult(argv, 0, out, "", 0.0)

    def _domstate(self, argv: tuple[str, ...]) -> CommandResult:
        if argv[-1] not in self.domains:
            return CommandResult(argv, 1, "", f"error: failed to get domain '{argv[-1]}'", 0.0)
        return self._ok(argv, self.domains[argv[-1]] + "\n\n")

    def _shutdown(self, argv: tuple[str, ...]) -> CommandResult:
        assert argv[-3:-1] == ("--mode", "acpi"), argv
        self.presses += 1
        self.events.append(("acpi shutdown", VM))
        if not self.acpi_ignored:
            self.domains[argv[-1]] = "shut off"
        return self._ok(argv)

    def _destroy(self, argv: tuple[str, ...]) -> CommandResult:
        self.domains[argv[-1]] = "shut off"
        self.events.append(("destroy", VM))
        return self._ok(argv)

    def _vstart(self, argv: tuple[str, ...]) -> CommandResult:
        assert self.domains[argv[-1]] == "shut off", "started a running domain"
        self.domains[argv[-1]] = "running"
        self.events.append(("start", VM))
        return self._ok(argv)

    def _ssh(self, argv: tuple[str, ...]) -> CommandResult:
        assert argv[-2] == f"root@{VM_HOST}", argv
        if self.domains[DOMAIN] != "running":
            return CommandResult(argv, 255, "", "ssh: connect to host: Connection refused", 0.0)
        if argv[-1] == "systemctl is-system-running --wait":
            self.events.append(("settled", VM))
            return self._ok(argv, "running\n")
        return self._ok(argv, "status: done\n" if "cloud-init" in argv[-1] else "")

    def _cp(self, argv: tuple[str, ...]) -> CommandResult:
        assert self.domains[DOMAIN] == "shut off", "copied the disks of a running VM"
        return super()._cp(argv)


ROLES = {"compute1": ["compute"], "storage1": ["storage"]}


def vm_lab(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The container lab of test_checkpoint plus a VM node (role controller) as `up` records it, with its files."""
    lab_dir, resources = make_lab(tmp_path, ROLES)
    rootfs = tmp_path / "images" / "rootfs"
    base = rootfs.parent / "vm-h1" / "base.qcow2"
    base.parent.mkdir()
    base.write_bytes(b"QFI\xfb base")
    resources["image/storage"]["outputs"]["hash"] = "h1"
    pool = lab_dir / "vm" / "pool"
    pool.mkdir(parents=True)
    (pool / f"{VM}.root.qcow2").write_bytes(b"root overlay v1")
    (pool / f"{VM}.disk-data.qcow2").write_bytes(b"data disk v1")
    (pool / f"{VM}.seed.iso").write_bytes(b"cidata")
    (lab_dir / "vm" / VM).mkdir()
    (lab_dir / "vm" / VM / "console.log").write_text("boot 1\n")
    resources[f"node/{VM}"] = {
        "spec": {"image": "storage", "roles": ["controller"], "kind": "vm"},
        "outputs": {
            "kind": "vm",
            "domain": DOMAIN,
            "uri": URI,
            "accel": "tcg",
            "console_log": str(lab_dir / "vm" / VM / "console.log"),
            "ssh": {"host": VM_HOST, "user": "root", "port": 22, "key": str(lab_dir / "ssh" / "id")},
        },
    }
    (lab_dir / "state.json").write_text(json.dumps({"resources": resources}))
    return lab_dir, resources


def store_of(lab_dir: Path, fake: Virsh, **power: Any) -> Checkpoints:
    runner = fake.runner()
    vms = VmPower(LAB, runner, lab_dir, poll_interval=0.01, sleep=lambda _s: None, **power)
    quiescer = Quiescer(
        LAB,
        runner,
        known_hosts=lab_dir / "known_hosts",
        ssh_waiter=lambda *_a, **_k: 0.0,
        poll_interval=0.01,
        vm_power=vms,
    )
    return Checkpoints(LAB, lab_dir, runner, quiescer)


def test_a_vm_node_is_recorded_with_its_domain_and_base_disk_and_takes_its_roles_tier(tmp_path: Path) -> None:
    _lab_dir, resources = vm_lab(tmp_path)
    nodes = {n.name: n for n in lab_nodes(resources)}
    vm = nodes[VM]
    assert vm.is_vm and vm.domain == DOMAIN and vm.uri == URI and vm.accel == "tcg"
    assert vm.base_disk == str(tmp_path / "images" / "vm-h1" / "base.qcow2")
    assert [[n.name for n in tier] for tier in start_tiers(list(nodes.values()))] == [["storage1"], [VM], ["compute1"]]


def test_save_shuts_the_vm_down_in_its_tier_copies_its_files_and_starts_it_after(tmp_path: Path) -> None:
    lab_dir, resources = vm_lab(tmp_path)
    fake = Virsh(list(ROLES))
    store = store_of(lab_dir, fake)

    info = store.save("base", resources)

    assert fake.events == [
        ("stop", "compute1"),
        ("acpi shutdown", VM),  # its tier (controller) after the computes, before storage
        ("stop", "storage1"),
        ("start", "storage1"),
        ("settled", "storage1"),
        ("start", VM),
        ("settled", VM),  # SSH, cloud-init and its systemd before the next tier
        ("start", "compute1"),
        ("settled", "compute1"),
    ]
    data = lab_dir / "checkpoints" / "base" / "data"
    assert (data / "vm" / "pool" / f"{VM}.root.qcow2").read_bytes() == b"root overlay v1"
    assert (data / "vm" / "pool" / f"{VM}.disk-data.qcow2").read_bytes() == b"data disk v1"
    assert (data / "vm" / "pool" / f"{VM}.seed.iso").is_file()
    assert (data / "vm" / VM).is_dir() and not (data / "vm" / VM / "console.log").exists(), "a log was saved"
    assert "vm" in info.entries
    saved_vm = next(n for n in info.nodes if n["name"] == VM)
    assert saved_vm["domain"] == DOMAIN and saved_vm["base_disk"].endswith("vm-h1/base.qcow2")
    assert fake.domains[DOMAIN] == "running"


def test_a_vm_that_does_not_shut_off_fails_the_save_and_every_node_runs_again(tmp_path: Path) -> None:
    lab_dir, resources = vm_lab(tmp_path)
    fake = Virsh(list(ROLES))
    fake.acpi_ignored = True
    store = store_of(lab_dir, fake, shutdown_budget={"tcg": 0.2}, resend_seconds=0.05)

    with pytest.raises(VmShutdownError, match=r"vm1 did not shut off within 0.2s.*nothing is saved"):
        store.save("base", resources)

    assert fake.presses >= 2, "the power button was pressed only once"
    assert not any(e == "destroy" for e, _ in fake.events), "a save must never power a VM off"
    assert isinstance(store.runner, FakeRunner)
    assert not [call for call in store.runner.calls if call[: len(COPY_ARGV)] == COPY_ARGV], "a disk was copied"
    assert store.saved() == [] and list((lab_dir / "checkpoints").iterdir()) == []
    assert all(state == "RUNNING" for state in fake.state.values())
    assert fake.domains[DOMAIN] == "running"
    # The computes, stopped before the VM's tier, were started again, after the VM answered.
    assert fake.events[-2:] == [("start", "compute1"), ("settled", "compute1")]
    assert ("settled", VM) in fake.events


def test_restore_destroys_the_vm_puts_its_disks_back_and_boots_it_from_them(tmp_path: Path) -> None:
    lab_dir, resources = vm_lab(tmp_path)
    fake = Virsh(list(ROLES))
    store = store_of(lab_dir, fake)
    store.save("base", resources)
    pool = lab_dir / "vm" / "pool"
    (pool / f"{VM}.root.qcow2").write_bytes(b"root overlay v2: marker deleted")
    (pool / f"{VM}.disk-data.qcow2").write_bytes(b"data disk v2")
    (pool / f"{VM}.stray.qcow2").write_bytes(b"not in the checkpoint")
    fake.events.clear()

    result = store.restore("base", resources)

    assert fake.events == [
        ("stop", "compute1"),
        ("destroy", VM),
        ("stop", "storage1"),
        ("start", "storage1"),
        ("settled", "storage1"),
        ("start", VM),
        ("settled", VM),
        ("start", "compute1"),
        ("settled", "compute1"),
    ]
    assert (pool / f"{VM}.root.qcow2").read_bytes() == b"root overlay v1"
    assert (pool / f"{VM}.disk-data.qcow2").read_bytes() == b"data disk v1"
    assert not (pool / f"{VM}.stray.qcow2").exists()
    assert not [p for p in lab_dir.iterdir() if p.name.startswith(".")], "the set-aside copy is left"
    assert set(result.seconds) == {"stop", "copy", "start", "cleanup"}


def test_restore_refuses_when_the_vms_base_disk_is_gone_before_touching_a_node(tmp_path: Path) -> None:
    lab_dir, resources = vm_lab(tmp_path)
    fake = Virsh(list(ROLES))
    store = store_of(lab_dir, fake)
    store.save("base", resources)
    (tmp_path / "images" / "vm-h1" / "base.qcow2").unlink()
    fake.events.clear()
    with pytest.raises(StackLabError, match=r"vm1: .*vm-h1/base.qcow2"):
        store.restore("base", resources)
    assert fake.events == []


def test_a_restore_into_a_vm_domain_that_is_gone_is_refused_before_touching_a_node(tmp_path: Path) -> None:
    lab_dir, resources = vm_lab(tmp_path)
    fake = Virsh(list(ROLES))
    store = store_of(lab_dir, fake)
    store.save("base", resources)
    del fake.domains[DOMAIN]
    fake.events.clear()
    with pytest.raises(CheckpointError, match=f"domains libvirt no longer has: vm1 \\({DOMAIN}\\)") as info:
        store.restore("base", resources)
    assert info.value.exit_code == EXIT_INVALID_LAB and fake.events == []
    # And a start never defines one: the start of a domain that vanished says so.
    (vm,) = [n for n in lab_nodes(resources) if n.is_vm]
    assert store.quiescer.vm_power is not None
    with pytest.raises(StackLabError, match=f"libvirt has no domain {DOMAIN} to start"):
        store.quiescer.vm_power.start(vm)


def test_training_copies_refuse_a_checkpoint_with_vm_nodes(tmp_path: Path) -> None:
    lab_dir, resources = vm_lab(tmp_path)
    fake = Virsh(list(ROLES))
    store_of(lab_dir, fake).save("copies", resources)
    copy_dir = tmp_path / "copy2"
    copy_dir.mkdir()
    copy = Checkpoints(LAB, copy_dir, fake.runner(), store_of(lab_dir, fake).quiescer, source=lab_dir / "checkpoints")
    with pytest.raises(CheckpointError, match=r"training copies hold container nodes only.*VM nodes vm1") as info:
        copy.materialize("copies")
    assert info.value.exit_code == EXIT_INVALID_LAB and "network namespace" in (info.value.hint or "")
    assert list(copy_dir.iterdir()) == []


def test_a_vm_without_a_recorded_domain_is_refused(tmp_path: Path) -> None:
    lab_dir, resources = vm_lab(tmp_path)
    del resources[f"node/{VM}"]["outputs"]["domain"]
    fake = Virsh(list(ROLES))
    with pytest.raises(CheckpointError, match=r"vm1 \(vm\)"):
        store_of(lab_dir, fake).save("base", resources)
    assert fake.events == []


def test_a_failed_restart_after_a_failed_shutdown_does_not_hide_why_nothing_was_saved(tmp_path: Path) -> None:
    lab_dir, resources = vm_lab(tmp_path)
    fake = Virsh(list(ROLES))
    fake.acpi_ignored = True

    def never_ready(target: Any, **_kw: Any) -> None:
        raise StackLabError(f"VM {target.node}: SSH did not answer")

    store = store_of(lab_dir, fake, shutdown_budget={"tcg": 0.05}, resend_seconds=0.01, ready_waiter=never_ready)
    with pytest.raises(VmShutdownError, match="did not shut off") as info:
        store.save("base", resources)
    assert any("starting the nodes again failed too: VM vm1: SSH did not answer" in n for n in info.value.__notes__)
    assert store.saved() == [] and list((lab_dir / "checkpoints").iterdir()) == []
