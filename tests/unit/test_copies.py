"""Training copies (engine/copies.py, the relocation in engine/checkpoint.py, host/netns.py) on lab dirs in tmp_path,
with the lxc-* commands scripted as in test_checkpoint.py and `cp` run for real."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from stacklab.cli import main
from stacklab.drivers.nodes.lxc_config import cgroup_lab_dir
from stacklab.drivers.nodes.lxc_host import link_exists
from stacklab.engine import copies as cp
from stacklab.engine.checkpoint import CheckpointError, Checkpoints
from stacklab.engine.quiesce import Quiescer
from stacklab.engine.relocate import relocate_text
from stacklab.host import netns
from stacklab.model import load_lab
from tests.unit.test_checkpoint import LAB, ROLES, Lxc, checkpoints, make_lab

ROOT = Path(__file__).resolve().parents[2]


def with_cgroup_lines(lab_dir: Path) -> None:
    """Each node config as the driver renders it in part: its overlay, logs and cgroup dir name the lab dir."""
    group = cgroup_lab_dir(LAB, Path(os.path.abspath(lab_dir / "lxc")))
    for node in ROLES:
        config = lab_dir / "lxc" / node / "config"
        config.write_text(
            config.read_text()
            + f"lxc.rootfs.path = overlay:/images/rootfs:{lab_dir}/lxc/{node}/delta0\n"
            + f"lxc.cgroup.dir.container = {group}/{node}/payload\n"
            + f"lxc.log.file = {lab_dir}/lxc/{node}/lxc.log\n"
        )


def copy_store(lab_dir: Path, index: int = 2) -> tuple[Checkpoints, Lxc, Path]:
    copy_dir = lab_dir / "copies" / str(index) / LAB
    copy_dir.mkdir(parents=True)
    lxc = Lxc(list(ROLES))
    lxc.state = dict.fromkeys(ROLES, "STOPPED")  # a new copy: none of its containers runs yet
    runner = lxc.runner()
    quiescer = Quiescer(LAB, runner, known_hosts=copy_dir / "known_hosts", ssh_waiter=lambda *a, **k: 0.0)
    return Checkpoints(LAB, copy_dir, runner, quiescer, source=lab_dir / "checkpoints"), lxc, copy_dir


def saved_lab(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    with_cgroup_lines(lab_dir)
    (lab_dir / "ssh_config").write_text(f"Host storage1\n  IdentityFile {lab_dir}/ssh/id\n")
    store, _ = checkpoints(lab_dir, Lxc(list(ROLES)))
    store.save(cp.COPY_CHECKPOINT, resources)
    return lab_dir, resources


def test_a_copy_is_the_checkpoint_relocated_to_its_own_dir(tmp_path: Path) -> None:
    lab_dir, _ = saved_lab(tmp_path)
    original = {p: p.read_bytes() for p in lab_dir.rglob("*") if p.is_file() and "checkpoints" not in p.parts}
    store, _lxc, copy_dir = copy_store(lab_dir)

    info, nodes, seconds = store.materialize(cp.COPY_CHECKPOINT)

    assert info.name == cp.COPY_CHECKPOINT and set(seconds) == {"copy"}
    assert {n.lxcpath for n in nodes} == {copy_dir / "lxc"}
    assert all(str(n.ssh["key"]).startswith(str(copy_dir)) for n in nodes)
    state = (copy_dir / "state.json").read_text()
    assert str(copy_dir / "lxc") in state
    assert not re.search(re.escape(f'"{lab_dir}/') + "(?!copies/2/)", state), "a path still names the original"
    config = (copy_dir / "lxc" / "storage1" / "config").read_text()
    old_group = cgroup_lab_dir(LAB, Path(os.path.abspath(lab_dir / "lxc")))
    assert f"{copy_dir}/lxc/storage1/delta0" in config and f":{lab_dir}/lxc" not in config
    assert cgroup_lab_dir(LAB, copy_dir / "lxc") in config and old_group not in config
    assert f"IdentityFile {copy_dir}/ssh/id" in (copy_dir / "ssh_config").read_text()
    assert (copy_dir / "lxc" / "infra1" / "delta0" / "var" / "lib" / "data" / "db").read_text() == "infra1 tables\n"
    assert not (copy_dir / "lxc" / "storage1" / "work" / "index").exists()
    # the original is untouched
    assert {p: p.read_bytes() for p in original} == original


def test_materialize_refuses_a_dir_that_holds_a_lab(tmp_path: Path) -> None:
    lab_dir, _ = saved_lab(tmp_path)
    store, _lxc, copy_dir = copy_store(lab_dir)
    (copy_dir / "state.json").write_text("{}")
    with pytest.raises(CheckpointError, match="already holds a lab"):
        store.materialize(cp.COPY_CHECKPOINT)


def test_a_reset_puts_the_copy_back_relocated_and_leaves_the_original_alone(tmp_path: Path) -> None:
    lab_dir, _ = saved_lab(tmp_path)
    store, lxc, copy_dir = copy_store(lab_dir)
    store.materialize(cp.COPY_CHECKPOINT)
    lxc.state = dict.fromkeys(ROLES, "RUNNING")
    copy_resources = json.loads((copy_dir / "state.json").read_text())["resources"]
    (copy_dir / "lxc" / "storage1" / "delta0" / "broken").write_text("a student's mistake\n")
    (lab_dir / "lxc" / "storage1" / "delta0" / "original-only").write_text("kept\n")
    (lab_dir / "checkpoints" / ".tmp-other-1").mkdir()  # a save of the original in progress

    result = store.restore(cp.COPY_CHECKPOINT, copy_resources)

    assert not (copy_dir / "lxc" / "storage1" / "delta0" / "broken").exists()
    assert str(copy_dir / "lxc") in (copy_dir / "state.json").read_text()
    assert cgroup_lab_dir(LAB, copy_dir / "lxc") in (copy_dir / "lxc" / "infra1" / "config").read_text()
    assert (lab_dir / "lxc" / "storage1" / "delta0" / "original-only").exists()
    assert (lab_dir / "checkpoints" / ".tmp-other-1").exists(), "a copy's reset cleared its original's save"
    assert set(result.seconds) == {"stop", "copy", "start", "cleanup"}
    # every lxc-* call named the copy's lxcpath, never the original's
    assert all(str(lab_dir / "lxc") != argv[argv.index("-P") + 1] for argv in lxc_calls(store))


def lxc_calls(store: Checkpoints) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = [tuple(c) for c in getattr(store.runner, "calls", [])]
    return [c for c in calls if c and c[0].startswith("lxc-")]


def test_the_checkpoint_of_a_copy_cannot_be_deleted_while_the_copy_exists(tmp_path: Path) -> None:
    lab_dir, _ = saved_lab(tmp_path)
    place = cp.CopyPlace(tmp_path / "state", LAB, 2)
    place.root.mkdir(parents=True)
    cp.CopyRecord(LAB, 2, place.netns, 1, cp.COPY_CHECKPOINT, 0.0).save(place)
    reader = Checkpoints.reader(LAB, lab_dir)
    with pytest.raises(CheckpointError, match="base of training copies 2"):
        reader.delete(cp.COPY_CHECKPOINT)
    assert [c.name for c in reader.saved()] == [cp.COPY_CHECKPOINT]


def test_a_save_never_holds_the_copies(tmp_path: Path) -> None:
    lab_dir, resources = make_lab(tmp_path, ROLES)
    (lab_dir / "copies" / "2").mkdir(parents=True)
    store, _ = checkpoints(lab_dir, Lxc(list(ROLES)))
    info = store.save("base", resources)
    assert "copies" not in info.entries


def test_targets(tmp_path: Path) -> None:
    place = cp.CopyPlace(tmp_path, "train", 3)
    place.root.mkdir(parents=True)
    cp.CopyRecord("train", 3, place.netns, 1, "copies", 0.0).save(place)
    assert cp.parse_target("train#3", tmp_path) == ("train", 3)
    assert cp.parse_target("train#1", tmp_path) == ("train", None)
    assert cp.parse_target("train-3", tmp_path) == ("train", 3)
    assert cp.parse_target("train-4", tmp_path) == ("train-4", None)  # no such copy: a lab name
    assert cp.parse_target("labs/train-3.yml", tmp_path) == ("labs/train-3.yml", None)
    (tmp_path / "train-3").mkdir()
    (tmp_path / "train-3" / "state.json").write_text("{}")
    assert cp.parse_target("train-3", tmp_path) == ("train-3", None)  # a lab of that name wins over `-k`
    with pytest.raises(cp.CopyError):
        cp.parse_target("train#0", tmp_path)
    assert [p.index for p in cp.copies_of(tmp_path, "train")] == [3]
    assert place.netns == "stacklab-train-3" and place.label == "train#3"


def test_relocate_text_moves_the_dir_and_paths_under_it_only() -> None:
    text = "\"/s/lab\" /s/lab/lxc /s/lab2/lxc '/s/lab' /s/lab\n"
    assert relocate_text(text, Path("/s/lab"), Path("/s/lab/copies/2/lab")) == (
        "\"/s/lab/copies/2/lab\" /s/lab/copies/2/lab/lxc /s/lab2/lxc '/s/lab/copies/2/lab' /s/lab/copies/2/lab\n"
    )


def test_vm_nodes_and_kernel_targets_are_refused() -> None:
    storage = load_lab(ROOT / "labs" / "storage.yml")
    cp.check_copyable(storage, {"iscsi_target": "tgt"})
    with pytest.raises(cp.CopyError, match="host kernel"):
        cp.check_copyable(storage, {"iscsi_target": "lio"})
    with_vm = load_lab(ROOT / "labs" / "lvm-iscsi.yml")
    with pytest.raises(cp.CopyError, match="container nodes only"):
        cp.check_copyable(with_vm, {})
    with pytest.raises(cp.CopyError):
        cp.check_count(0)


def test_leftovers_name_processes_in_the_netns_or_the_copy_dir(tmp_path: Path) -> None:
    place = cp.CopyPlace(tmp_path / "state", "train", 2)
    proc = tmp_path / "proc"
    ns_file = tmp_path / "ns-inode"
    ns_file.write_text("")
    for pid, cmdline, net in ((101, "sleep 100", ns_file), (102, f"[lxc monitor] {place.lab_dir}/lxc n1", None)):
        (proc / str(pid) / "ns").mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode())
        (proc / str(pid) / "ns" / "net").write_text("") if net is None else (proc / str(pid) / "ns" / "net").symlink_to(
            net
        )
    (proc / "self").mkdir()
    (proc / "self" / "mountinfo").write_text("")
    found = cp.leftovers(place, os.stat(ns_file).st_ino, "stacklab/none", proc)
    assert any(f.startswith("process 101 ") and "netns" in f for f in found), found
    assert any(f.startswith("process 102 ") for f in found), found
    assert cp.leftovers(place, -1, "stacklab/none", proc)[0].startswith("process 102")


def test_links_are_looked_up_in_the_callers_netns() -> None:
    assert link_exists("lo")
    assert not link_exists("stacklab-none0")


@pytest.mark.parametrize("name", ["../etc", "", "a/b", "-x"])
def test_netns_names_are_checked(name: str) -> None:
    with pytest.raises(netns.NetnsError):
        netns.path_of(name)


@pytest.mark.parametrize(
    "args",
    [
        ["reset", "nolab#2"],
        ["verify", "nolab#2"],
        ["status", "nolab#3"],
        ["down", "nolab#2"],
        ["ssh", "nolab#2", "node1"],
    ],
)
def test_cli_an_unknown_copy_exits_2_and_touches_nothing(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, args, env={"STACKLAB_STATE": str(tmp_path / "state")})
    assert result.exit_code == 2, result.output
    assert "lab nolab has no copy" in result.stderr
    assert not (tmp_path / "state").exists()


def test_cli_copies_of_a_lab_with_vm_nodes_are_refused_before_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["up", "-y", str(ROOT / "labs" / "lvm-iscsi.yml"), "--copies", "2"],
        env={"STACKLAB_STATE": str(tmp_path / "state")},
    )
    assert result.exit_code == 2, result.output
    assert "training copies hold container nodes only" in result.stderr
    assert not (tmp_path / "state").exists()
