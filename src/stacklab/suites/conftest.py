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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking `node` run once per node; `node_pair` once per ordered pair of distinct nodes."""
    if not {"node", "node_pair"} & set(metafunc.fixturenames):
        return
    ctx = LabContext.load()
    names = sorted(ctx.nodes)
    if "node" in metafunc.fixturenames:
        metafunc.parametrize("node", names)
    if "node_pair" in metafunc.fixturenames:
        pairs = [(a, b) for a in names for b in names if a != b]
        metafunc.parametrize("node_pair", pairs, ids=[f"{a}->{b}" for a, b in pairs])
