"""Fixtures for the suites: the lab context and one testinfra host per node (SSH with the lab's ssh_config)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext


@pytest.fixture(scope="session")
def lab() -> LabContext:
    return LabContext.load()


@pytest.fixture(scope="session")
def hosts(lab: LabContext) -> dict[str, Any]:
    import testinfra

    return {
        name: testinfra.get_host(f"ssh://{name}", ssh_config=str(lab.ssh_config), connect_timeout=10)
        for name in lab.nodes
    }


@pytest.fixture(scope="session")
def runners(lab: LabContext) -> Iterator[dict[str, Runner]]:
    """stacklab's SSH runner per node (argv lists, timeouts, stdin for secrets and payloads)."""
    from stacklab.engine.access import node_runner_for

    factory = node_runner_for(lab.state_dir)
    made = {name: factory(name) for name in lab.nodes}
    yield made
    for runner in made.values():
        close = getattr(runner, "close", None)
        if close is not None:
            close()


def _names_of(ctx: LabContext, kind: str, key: str) -> list[str]:
    """Names under outputs[key] of the lab's resources of a kind (iSCSI targets, NFS exports)."""
    return sorted(name for rid, out in ctx.outputs.items() if rid.startswith(f"{kind}/") for name in out.get(key, {}))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking `node` run once per node; `node_pair` once per ordered pair of distinct nodes;
    `iscsi_target` once per iSCSI target and `nfs_export` once per NFS export of the lab."""
    wanted = {"node", "node_pair", "iscsi_target", "nfs_export"} & set(metafunc.fixturenames)
    if not wanted:
        return
    ctx = LabContext.load()
    for fixture, kind, key in (("iscsi_target", "iscsi", "targets"), ("nfs_export", "nfs", "exports")):
        if fixture in wanted:
            names = _names_of(ctx, kind, key)
            marks = [] if names else [pytest.mark.skip(reason=f"the lab has no {kind} {key}")]
            metafunc.parametrize(fixture, names or [pytest.param("-", marks=marks)])
    names = sorted(ctx.nodes)
    if "node" in metafunc.fixturenames:
        metafunc.parametrize("node", names)
    if "node_pair" in metafunc.fixturenames:
        pairs = [(a, b) for a in names for b in names if a != b]
        metafunc.parametrize("node_pair", pairs, ids=[f"{a}->{b}" for a, b in pairs])
