"""Checkpoints (engine/checkpoint.py, engine/quiesce.py) on a lab directory in tmp_path.

The lxc-* commands are scripted by a FakeRunner that keeps each container's state; `cp` is run for real (through
a LocalRunner, from the FakeRunner's responder), so what is saved and restored is what the real copy does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stacklab.cli import main
from stacklab.engine.checkpoint import (
    COPY_ARGV,
    MANIFEST,
    CheckpointError,
    Checkpoints,
    validate_name,
)
from stacklab.engine.lab_nodes import LabNode, lab_nodes
from stacklab.engine.quiesce import Quiescer, start_tiers
from stacklab.errors import EXIT_INVALID_LAB, StackLabError
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult, LocalRunner

LAB = "ck"


class Lxc:
    """The containers' states as lxc-info reports them; lxc-stop/lxc-start change them. Records the order."""

    def __init__(self, names: list[str]) -> None:
        self.state = dict.fromkeys(names, "RUNNING")
        self.events: list[tuple[str, str]] = []
        self.fail_cp = False
        self.fail_start: set[str] = set()
        self.settles_as = "running"  # what `systemctl is-system-running --wait` answers in every node

    def runner(self) -> FakeRunner:
        fake = FakeRunner()
        fake.expect(["lxc-info"], responder=self._info)
        fake.expect(["lxc-stop"], responder=self._stop)
        fake.expect(["lxc-start"], responder=self._start)
        fake.expect(["lxc-attach"], responder=self._attach)
        fake.expect(list(COPY_ARGV), responder=self._cp)
        return fake

    def _name(self, argv: tuple[str, ...]) -> str:
        return argv[argv.index("-n") + 1]

    def _info(self, argv: tuple[str, ...]) -> CommandResult:
        state = self.state[self._name(argv)]
        pid = "PID: 4242\n" if state == "RUNNING" else ""
        return CommandResult(argv, 0, f"State: {state}\n{pid}", "", 0.0)

    def _stop(self, argv: tuple[str, ...]) -> CommandResult:
        self.state[self._name(argv)] = "STOPPED"
        self.events.append(("stop", self._name(argv)))
        return CommandResult(argv, 0, "", "", 0.0)

    def _start(self, argv: tuple[str, ...]) -> CommandResult:
        if self._name(argv) in self.fail_start:
            self.events.append(("failed start", self._name(argv)))
            return CommandResult(argv, 1, "", 'Received container state "ABORTING" instead of "RUNNING"', 0.0)
        self.state[self._name(argv)] = "RUNNING"
        self.events.append(("start", self._name(argv)))
        return CommandResult(argv, 0, "", "", 0.0)

    def _attach(self, argv: tuple[str, ...]) -> CommandResult:
        assert argv[-3:] == ("systemctl", "is-system-running", "--wait"), argv
        assert self.state[self._name(argv)] == "RUNNING"
        self.events.append(("settled", self._name(argv)))
        return CommandResult(argv, 0 if self.settles_as == "running" else 1, f"{self.settles_as}\n", "", 0.0)

    def _cp(self, argv: tuple[str, ...]) -> CommandResult:
        assert all(self.state[n] == "STOPPED" for n in self.state), f"copy while a node runs: {self.state}"
        if self.fail_cp:
            return CommandResult(argv, 1, "", "cp: No space left on device", 0.0)
        return LocalRunner().run(list(argv), timeout=60)


def make_lab(tmp_path: Path, roles: Mapping[str, list[str]]) -> tuple[Path, dict[str, Any]]:
    """A lab state dir as `up` leaves it: state.json, secrets, keys, one LXC node dir per node, history."""
    lab_dir = tmp_path / "state" / LAB
    rootfs = tmp_path / "images" / "rootfs"
    rootfs.mkdir(parents=True)
    resources: dict[str, Any] = {"image/storage": {"outputs": {"rootfs": str(rootfs)}}}
    for name, node_roles in roles.items():
        node_dir = lab_dir / "lxc" / name
        (node_dir / "delta0" / "var" / "lib" / "data").mkdir(parents=True)
        (node_dir / "delta0" / "var" / "lib" / "data" / "db").write_text(f"{name} tables\n")
        sparse = node_dir / "delta0" / "osd.block"
        with sparse.open("wb") as handle:  # a sparse OSD file: 64 MiB apparent, 4 KiB written
            handle.truncate(64 * 2**20)
            handle.write(b"x" * 4096)
        (node_dir / "work" / "index").mkdir(parents=True)
        (node_dir / "config").write_text(f"# stacklab-marker: stacklab:{LAB}:node:{name}\n")
        resources[f"node/{name}"] = {
            "spec": {"image": "storage", "roles": node_roles, "kind": "container"},
            "outputs": {
                "kind": "container",
                "name": name,
                "lxcpath": str(lab_dir / "lxc"),
                "ssh": {"host": f"10.9.9.{len(resources)}", "key": str(lab_dir / "ssh" / "id"), "port": 22},
            },
        }
    (lab_dir / "secrets").mkdir(parents=True)
    (lab_dir / "secrets" / "ceph-fsid").write_text("fsid-1\n")
    (lab_dir / "state.json").write_text(json.dumps({"resources": resources}))
    (lab_dir / "known_hosts").write_text("10.9.9.1 ssh-ed25519 AAAA\n")
    (lab_dir / "logs").mkdir()
    (lab_dir / "logs" / "run.jsonl").write_text("{}\n")
    (lab_dir / "verify").mkdir()
    (lab_dir / "lock").write_text("")
    return lab_dir, resources


def checkpoints(lab_dir: Path, lxc: Lxc) -> tuple[Checkpoints, list[str]]:
    waited: list[str] = []

    def ssh_waiter(host: str, *_args: Any, **_kw: Any) -> float:
        waited.append(host)
        return 0.0

    runner = lxc.runner()
    quiescer = Quiescer(LAB, runner, known_hosts=lab_dir / "known_hosts", ssh_waiter=ssh_waiter, poll_interval=0.01)
    return Checkpoints(LAB, lab_dir, runner, quiescer), waited


ROLES = {"client1": ["client"], "compute1": ["compute"], "infra1": ["controller"], "storage1": ["storage", "swift"]}


@pytest.mark.parametrize("name", ["base", "a", "before-upgrade.2", "x_1", "9lives"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "../up", "A", "a b", "x" * 64, "a..b"])
def test_bad_names_exit_2_with_the_rule(name: str) -> None:
    with pytest.raises(CheckpointError) as info:
        validate_name(name)
    assert info.value.exit_code == EXIT_INVALID_LAB
    assert repr(name) in str(info.value) and "a-z, 0-9" in str(info.value)


def test_start_order_follows_what_nodes_serve(tmp_path: Path) -> None:
    _lab_dir, resources = make_lab(tmp_path, {**ROLES, "plain": []})
    tiers = [[n.name for n in tier] for tier in start_tiers(lab_nodes(resources))]
    assert tiers == [["storage1"], ["infra1"], ["compute1"], ["client1"], ["plain"]]


def test_save_stops_in_reverse_order_copies_the_lab_and_starts_in_order(tmp_path: Path) -> None:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    lxc = Lxc(list(ROLES))
    store, waited = checkpoints(lab_dir, lxc)

    info = store.save("base", resources)

    assert lxc.events == [
        ("stop", "client1"),
        ("stop", "compute1"),
        ("stop", "infra1"),
        ("stop", "storage1"),
        ("start", "storage1"),
        ("settled", "storage1"),  # its systemd done starting units before the next tier starts
        ("start", "infra1"),
        ("settled", "infra1"),
        ("start", "compute1"),
        ("settled", "compute1"),
        ("start", "client1"),
        ("settled", "client1"),
    ]
    assert sorted(waited) == sorted(n.ssh["host"] for n in lab_nodes(resources))
    assert all(state == "RUNNING" for state in lxc.state.values())
    data = lab_dir / "checkpoints" / "base" / "data"
    assert sorted(p.name for p in data.iterdir()) == ["known_hosts", "lxc", "secrets", "state.json"]
    assert (data / "lxc" / "infra1" / "delta0" / "var" / "lib" / "data" / "db").read_text() == "infra1 tables\n"
    block = data / "lxc" / "storage1" / "delta0" / "osd.block"
    assert block.stat().st_size == 64 * 2**20 and block.stat().st_blocks * 512 < 2**20, "the copy is not sparse"
    assert [c.name for c in store.saved()] == ["base"]
    assert info.entries == ["known_hosts", "lxc", "secrets", "state.json"]
    assert set(info.seconds) == {"stop", "copy", "start"} and info.bytes_on_disk < 2**20
    assert (
        json.loads((lab_dir / "checkpoints" / "base" / MANIFEST).read_text())["seconds"].keys() == info.seconds.keys()
    )


def test_a_half_written_checkpoint_is_never_listed_and_is_cleared_by_the_next_save(tmp_path: Path) -> None:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    store, _ = checkpoints(lab_dir, Lxc(list(ROLES)))
    half = lab_dir / "checkpoints" / ".tmp-base-999"
    (half / "data").mkdir(parents=True)
    (half / MANIFEST).write_text("{}")
    (lab_dir / "checkpoints" / "nomanifest" / "data").mkdir(parents=True)
    assert store.saved() == []
    store.save("base", resources)
    assert [c.name for c in store.saved()] == ["base"] and not half.exists()


def test_a_failed_copy_leaves_no_checkpoint_and_the_nodes_running(tmp_path: Path) -> None:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    lxc = Lxc(list(ROLES))
    lxc.fail_cp = True
    store, _ = checkpoints(lab_dir, lxc)
    with pytest.raises(StackLabError, match="No space left"):
        store.save("base", resources)
    assert store.saved() == []
    assert [p.name for p in (lab_dir / "checkpoints").iterdir()] == []
    assert all(state == "RUNNING" for state in lxc.state.values())


def test_save_refuses_an_existing_name_and_vm_nodes(tmp_path: Path) -> None:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    lxc = Lxc(list(ROLES))
    store, _ = checkpoints(lab_dir, lxc)
    store.save("base", resources)
    lxc.events.clear()
    with pytest.raises(CheckpointError, match="already has a checkpoint named 'base'") as info:
        store.save("base", resources)
    assert info.value.exit_code == EXIT_INVALID_LAB
    vm = dict(resources)
    vm["node/vm1"] = {"spec": {"kind": "vm"}, "outputs": {"kind": "vm", "name": "vm1"}}
    with pytest.raises(CheckpointError, match=r"vm1 \(vm\)"):
        store.save("other", vm)
    assert lxc.events == [], "a refused save touched a node"


def test_restore_puts_back_files_state_and_keys_and_drops_the_overlay_index(tmp_path: Path) -> None:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    lxc = Lxc(list(ROLES))
    store, _ = checkpoints(lab_dir, lxc)
    store.save("base", resources)
    # Break the lab: a node file deleted, one added, a secret and the state changed.
    db = lab_dir / "lxc" / "infra1" / "delta0" / "var" / "lib" / "data" / "db"
    db.unlink()
    (lab_dir / "lxc" / "storage1" / "delta0" / "broken").write_text("after the checkpoint\n")
    (lab_dir / "secrets" / "ceph-fsid").write_text("fsid-2\n")
    (lab_dir / "state.json").write_text("{}")
    (lab_dir / "logs" / "later.jsonl").write_text("{}\n")
    lxc.events.clear()

    result = store.restore("base", resources)

    assert db.read_text() == "infra1 tables\n"
    assert not (lab_dir / "lxc" / "storage1" / "delta0" / "broken").exists()
    assert (lab_dir / "secrets" / "ceph-fsid").read_text() == "fsid-1\n"
    assert json.loads((lab_dir / "state.json").read_text()) == {"resources": resources}
    assert (lab_dir / "logs" / "later.jsonl").exists(), "history is not part of a checkpoint"
    assert not (lab_dir / "lxc" / "storage1" / "work" / "index").exists()
    assert not [p for p in lab_dir.iterdir() if p.name.startswith(".")], "the set-aside copy is left"
    assert [e for e, _ in lxc.events] == ["stop"] * 4 + ["start", "settled"] * 4
    assert set(result.seconds) == {"stop", "copy", "start", "cleanup"}
    # The checkpoint itself is unchanged: it restores again.
    (lab_dir / "lxc" / "storage1" / "delta0" / "broken").write_text("again\n")
    store.restore("base", resources)
    assert not (lab_dir / "lxc" / "storage1" / "delta0" / "broken").exists()


def test_a_failed_restore_copy_puts_the_lab_back_as_it_was(tmp_path: Path) -> None:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    lxc = Lxc(list(ROLES))
    store, _ = checkpoints(lab_dir, lxc)
    store.save("base", resources)
    (lab_dir / "secrets" / "ceph-fsid").write_text("fsid-2\n")
    lxc.fail_cp = True
    with pytest.raises(StackLabError, match="No space left"):
        store.restore("base", resources)
    assert (lab_dir / "secrets" / "ceph-fsid").read_text() == "fsid-2\n"
    assert (lab_dir / "lxc" / "infra1" / "delta0" / "var" / "lib" / "data" / "db").exists()
    assert not [p for p in lab_dir.iterdir() if p.name.startswith(".")]


def test_a_node_that_does_not_start_is_retried_once_and_the_error_leaves_the_restored_files(tmp_path: Path) -> None:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    lxc = Lxc(list(ROLES))
    store, _ = checkpoints(lab_dir, lxc)
    store.save("base", resources)
    (lab_dir / "secrets" / "ceph-fsid").write_text("fsid-2\n")
    lxc.fail_start = {"infra1"}
    lxc.events.clear()
    with pytest.raises(StackLabError, match="ABORTING"):
        store.restore("base", resources)
    assert lxc.events.count(("failed start", "infra1")) == 2
    assert ("start", "compute1") not in lxc.events, "a later tier started before its dependencies"
    assert (lab_dir / "secrets" / "ceph-fsid").read_text() == "fsid-1\n"
    assert not [p for p in lab_dir.iterdir() if p.name.startswith(".")], "the set-aside copy is left"


def test_restore_refuses_unknown_names_other_nodes_and_missing_images(tmp_path: Path) -> None:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    lxc = Lxc(list(ROLES))
    store, _ = checkpoints(lab_dir, lxc)
    with pytest.raises(CheckpointError, match="no checkpoint named 'nope'"):
        store.restore("nope", resources)
    store.save("base", resources)
    lxc.events.clear()
    fewer = {k: v for k, v in resources.items() if k != "node/client1"}
    with pytest.raises(CheckpointError, match=r"only then: \['client1'\]"):
        store.restore("base", fewer)
    os.rename(tmp_path / "images" / "rootfs", tmp_path / "images" / "gone")
    with pytest.raises(StackLabError, match="image root file systems that are gone"):
        store.restore("base", resources)
    assert lxc.events == [], "a refused restore touched a node"


def test_delete_removes_it_from_the_list(tmp_path: Path) -> None:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    store, _ = checkpoints(lab_dir, Lxc(list(ROLES)))
    store.save("base", resources)
    store.delete("base")
    assert store.saved() == [] and not (lab_dir / "checkpoints" / "base").exists()
    with pytest.raises(CheckpointError):
        store.delete("base")


def test_a_node_without_a_recorded_lxcpath_is_refused() -> None:
    node = LabNode("n1", "container", (), None, {}, None)
    with pytest.raises(StackLabError, match="records no lxcpath"):
        _ = node.layout


@pytest.mark.parametrize("command", ["save", "restore", "delete"])
def test_cli_bad_name_exits_2_before_anything(command: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["checkpoint", command, "nolab", "../x"], env={"STACKLAB_STATE": str(tmp_path / "state")}
    )
    assert result.exit_code == 2, result.output
    assert "checkpoint name '../x' is not valid" in result.stderr
    assert not (tmp_path / "state").exists()


def test_a_node_whose_units_do_not_finish_starting_fails_the_start(tmp_path: Path) -> None:
    """SSH answering is not enough: a node still starting its units (tgt `activating`) is not back yet."""
    lab_dir, resources = make_lab(tmp_path, {"storage1": ["storage"]})
    lxc = Lxc(["storage1"])
    lxc.settles_as = "maintenance"
    runner = lxc.runner()
    quiescer = Quiescer(LAB, runner, known_hosts=lab_dir / "known_hosts", ssh_waiter=lambda *_a, **_k: 0.0)
    (node,) = lab_nodes(resources)
    lxc.state["storage1"] = "STOPPED"
    with pytest.raises(StackLabError, match=r"systemd did not finish starting its units \(maintenance\)"):
        quiescer.start(node)
