"""Fixtures of the suites, loaded by `stacklab verify` as a pytest plugin (`-p stacklab.suites.lab_fixtures`) so
that a user's own testinfra file passed with `--suite ./file.py` gets the same ones:

- `host`: pytest-testinfra's own fixture, one per lab node. verify passes `--hosts ssh://NODE,...` and
  `--ssh-config` with the lab's exported ssh_config, so testinfra parametrizes every test taking `host` over the
  nodes exactly as `pytest --hosts` would; `node` is that host's lab node name.
- `hosts`: every node's testinfra host by name, for checks that involve two nodes.
- `lab`: the lab context (nodes, addresses, outputs of every resource); `runners`: stacklab's SSH runner per node
  (argv lists, timeouts, stdin for secrets and payloads).
- `evidence`: records what a flow proved (bytes, where they landed, the NIC or session that carried them) as
  JUnit properties `evidence.<key>`, which verify's summary and HTML report show beside the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.report import EVIDENCE_PREFIX, SUITE_PROPERTY

SUITES_DIR = Path(__file__).resolve().parent

Evidence = Callable[[str, object], None]


def suite_name(path: Path) -> str:
    """A shipped suite is named by its module (test_storage.py -> storage); a user's file by its file name."""
    if path.resolve().parent == SUITES_DIR and path.name.startswith("test_"):
        return path.stem.removeprefix("test_")
    return path.name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The suite of every test lands in the JUnit XML, which the summary table and the HTML report are made from.
    for item in items:
        item.user_properties.append((SUITE_PROPERTY, suite_name(Path(str(item.path)))))


@pytest.fixture(scope="session")
def lab() -> LabContext:
    return LabContext.load()


@pytest.fixture(scope="module")
def node(host: Any) -> str:
    """The lab node name of the testinfra `host` this test runs on."""
    return str(host.backend.hostname)


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
    made = {name: lab.runner(name) for name in lab.nodes}
    yield dict(made)
    for runner in made.values():
        runner.close()


@pytest.fixture
def evidence(record_property: Callable[[str, object], None]) -> Evidence:
    """`evidence(key, value)`: one fact the test proved, kept in the JUnit XML and shown in the HTML report."""

    def record(key: str, value: object) -> None:
        record_property(f"{EVIDENCE_PREFIX}{key}", value)

    return record


def _names_of(ctx: LabContext, kind: str, key: str) -> list[str]:
    """Names under outputs[key] of the lab's resources of a kind (iSCSI targets, NFS exports)."""
    return sorted(name for rid, out in ctx.outputs.items() if rid.startswith(f"{kind}/") for name in out.get(key, {}))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking `iscsi_target` run once per iSCSI target and `nfs_export` once per NFS export of the lab."""
    wanted = {"iscsi_target", "nfs_export"} & set(metafunc.fixturenames)
    if not wanted:
        return
    ctx = LabContext.load()
    for fixture, kind, key in (("iscsi_target", "iscsi", "targets"), ("nfs_export", "nfs", "exports")):
        if fixture in wanted:
            names = _names_of(ctx, kind, key)
            marks = [] if names else [pytest.mark.skip(reason=f"the lab has no {kind} {key}")]
            metafunc.parametrize(fixture, names or [pytest.param("-", marks=marks)])
