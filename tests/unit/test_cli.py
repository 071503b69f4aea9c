"""CLI contract: exit codes (0 ok, 2 invalid lab), file:line in messages, JSON outputs parse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from stacklab.cli import main

ROOT = Path(__file__).resolve().parents[2]


def cli_runner() -> CliRunner:
    """The runner CLI tests share: click >= 8.2 (pyproject's floor) keeps stderr apart from stdout."""
    return CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = cli_runner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_default_lab() -> None:
    code, out, _ = invoke("validate", str(ROOT / "labs" / "aio.yml"))
    assert code == 0, out
    assert "lab 'aio' is valid" in out


@pytest.mark.parametrize("path", sorted((ROOT / "labs" / "broken").glob("*.yml")), ids=lambda p: p.stem)
def test_validate_broken_exits_2_with_file_line_and_field(path: Path) -> None:
    code, _, err = invoke("validate", str(path))
    assert code == 2
    first = err.splitlines()[1]
    file_part, line, column, field = first.split(":", 4)[:4]
    assert file_part.endswith(path.name) and int(line) >= 1 and int(column) >= 1 and field.strip()


def test_validate_json_lists_issues() -> None:
    code, out, _ = invoke("validate", "--json", str(ROOT / "labs" / "broken" / "unknown-network.yml"))
    assert code == 2
    doc = json.loads(out)
    assert doc["valid"] is False
    assert doc["issues"][0]["field"] == "nodes.n1.nics.stor" and doc["issues"][0]["line"] == 12


def test_schema_is_json_schema_with_the_lab_fields() -> None:
    code, out, _ = invoke("schema")
    assert code == 0
    schema = json.loads(out)
    assert {"name", "networks", "nodes", "storage", "openstack", "verify"} <= set(schema["properties"])
    assert "source" not in schema["properties"]


def test_graph_is_dot() -> None:
    code, out, _ = invoke("graph", str(ROOT / "labs" / "net-only.yml"))
    assert code == 0
    assert out.startswith('graph "net-only"') and '"bridge/mgmt" [label=' in out


def test_missing_lab_file_is_exit_2(tmp_path: Path) -> None:
    code, _, err = invoke("validate", str(tmp_path / "nope.yml"))
    assert code == 2 and "cannot read lab file" in err


def test_graph_draws_networks_nodes_storage_and_services() -> None:
    code, out, _ = invoke("graph", str(ROOT / "labs" / "aio.yml"))
    assert code == 0
    assert '"bridge/storage" -- "node/storage1" [label="172.29.244.21/24"];' in out
    assert '"node/storage1" -- "iscsi/storage1" [style=bold];' in out and "LUN lun1: file, 1024 MiB" in out
    assert '"node/storage1" -- "ceph/aio"' in out and '"node/infra1" -- "ceph/aio"' not in out
    assert '"ceph/aio" -- "node/infra1" [style=dashed, label=client];' in out
    assert '"node/infra1" -- "service/cinder";' in out
    assert '"service/cinder" -- "ceph/aio" [style=dashed' in out


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed (apt-get install graphviz)")
def test_graph_svg_is_rendered_by_graphviz(tmp_path: Path) -> None:
    target = tmp_path / "aio.svg"
    code, _, err = invoke("graph", str(ROOT / "labs" / "aio.yml"), "--format", "svg", "-o", str(target))
    assert code == 0, err
    svg = target.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "storage1" in svg and "service/cinder" in svg


def test_graph_without_graphviz_exits_2_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stacklab.lab_graph.shutil.which", lambda _name: None)
    code, _, err = invoke("graph", str(ROOT / "labs" / "aio.yml"), "--format", "png", "-o", str(tmp_path / "x.png"))
    assert code == 2 and "needs Graphviz's `dot`" in err and "apt-get install graphviz" in err
    assert not (tmp_path / "x.png").exists()
