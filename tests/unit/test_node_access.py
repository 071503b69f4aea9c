"""Node runners: one cached SSH runner per node per run, replaced when the node's recorded address changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacklab.engine.access import NodeRunners, node_runner_for
from stacklab.engine.state import StateStore
from stacklab.errors import StackLabError
from stacklab.exec.ssh import SSHRunner
from stacklab.plan.resource import Resource


def _record(root: Path, node: str, host: str) -> None:
    ssh = {"host": host, "user": "root", "key": str(root / "lab/id_ed25519"), "port": 22}
    StateStore(root, "lab").record(Resource("node", node, {}), {"ssh": ssh})


def test_one_runner_per_node_until_the_address_changes(tmp_path: Path) -> None:
    _record(tmp_path, "n1", "10.0.0.11")
    _record(tmp_path, "n2", "10.0.0.12")
    runners = NodeRunners(tmp_path / "lab")
    first = runners("n1")
    assert isinstance(first, SSHRunner) and first.host == "10.0.0.11"
    assert runners("n1") is first
    assert runners("n2") is not first
    closed: list[str] = []
    first.close = lambda: closed.append(first.host)  # type: ignore[method-assign]
    _record(tmp_path, "n1", "10.0.0.21")  # node re-created elsewhere
    second = runners("n1")
    assert isinstance(second, SSHRunner) and second.host == "10.0.0.21"
    assert closed == ["10.0.0.11"]
    runners.close()
    assert runners("n1") is not second


def test_a_node_that_is_not_up_is_named(tmp_path: Path) -> None:
    StateStore(tmp_path, "lab").set_meta("lab", {})
    with pytest.raises(StackLabError, match="node ghost is not up"):
        NodeRunners(tmp_path / "lab")("ghost")
    with pytest.raises(StackLabError, match="node ghost is not up"):
        node_runner_for(tmp_path / "lab")("ghost")


def test_the_factory_gives_separate_connections(tmp_path: Path) -> None:
    _record(tmp_path, "n1", "10.0.0.11")
    factory = node_runner_for(tmp_path / "lab")
    assert factory("n1") is not factory("n1")


def test_the_suites_lab_context_reaches_nodes_through_exec_only(tmp_path: Path) -> None:
    """The suites build their runners from the context `verify` exported (no engine import): same address, user,
    key and the lab's known_hosts as the engine's runner; a node without a recorded address is named."""
    from stacklab.suites.context import LabContext, build_context

    _record(tmp_path, "n1", "10.0.0.11")
    store = StateStore(tmp_path, "lab")
    lab = LabContext.from_dict(build_context("lab", tmp_path / "lab", store.resources))
    runner = lab.runner("n1")
    engine_runner = node_runner_for(tmp_path / "lab")("n1")
    assert isinstance(engine_runner, SSHRunner)
    assert (runner.host, runner.user, runner.key_file, runner.port, runner.known_hosts) == (
        engine_runner.host,
        engine_runner.user,
        engine_runner.key_file,
        engine_runner.port,
        engine_runner.known_hosts,
    )
    assert runner.known_hosts == tmp_path / "lab" / "known_hosts"
    assert lab.runner("n1") is not runner
    with pytest.raises(StackLabError, match="node ghost is not up"):
        lab.runner("ghost")
