"""A lab reopened by name (`status`, `ssh`, `down LAB`) from its state file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stacklab.engine.state import StateStore
from stacklab.errors import StackLabError
from stacklab.model.load import load_lab
from stacklab.session import LAB_TEXT_META, lab_from_arg

LABS = Path(__file__).resolve().parents[2] / "labs"


def _store_lab(tmp_path: Path, lab_json: dict[str, Any]) -> str:
    name = str(lab_json["name"])
    store = StateStore(tmp_path, name)
    store.set_meta("lab", lab_json)
    store.set_meta(LAB_TEXT_META, json.dumps(lab_json))
    return name


def test_a_stored_lab_comes_back_as_it_was_recorded(tmp_path: Path) -> None:
    lab = load_lab(LABS / "storage.yml")
    name = _store_lab(tmp_path, json.loads(lab.model_dump_json()))
    assert lab_from_arg(name, tmp_path).nodes.keys() == lab.nodes.keys()


def test_a_stored_lab_that_breaks_a_newer_rule_is_named_not_a_crash(tmp_path: Path) -> None:
    """A lab brought up before export paths had to sit under /srv/nfs/ must get a message naming the field (the CLI
    turned the raw ValidationError into its `bug:` line, exit 70)."""
    lab_json = json.loads(load_lab(LABS / "storage.yml").model_dump_json())
    lab_json["storage"]["nfs"]["exports"][0]["path"] = "/srv/exports"
    name = _store_lab(tmp_path, lab_json)
    with pytest.raises(StackLabError) as caught:
        lab_from_arg(name, tmp_path)
    text = str(caught.value)
    assert "no longer passes this stacklab's checks" in text
    assert "path" in text
    assert "release that brought the lab up" in text
