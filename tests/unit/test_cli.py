"""CLI contract: exit codes (0 ok, 2 invalid lab), file:line in messages, JSON outputs parse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stacklab.cli import main

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
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
    assert out.startswith('digraph "net-only"') and '"bridge/mgmt";' in out


def test_missing_lab_file_is_exit_2(tmp_path: Path) -> None:
    code, _, err = invoke("validate", str(tmp_path / "nope.yml"))
    assert code == 2 and "cannot read lab file" in err
