"""Lab file model: valid labs load; broken labs fail with golden messages naming file, line, column and field."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from stacklab.model import LabError, load_lab, load_lab_text
from stacklab.model.addressing import node_addresses
from stacklab.model.units import parse_size_mib
from tests.golden_util import check_golden

ROOT = Path(__file__).resolve().parents[2]
BROKEN = sorted((ROOT / "labs" / "broken").glob("*.yml"))


@pytest.mark.parametrize("name", ["aio", "net-only", "lvm-iscsi"])
def test_example_labs_are_valid(name: str) -> None:
    lab = load_lab(ROOT / "labs" / f"{name}.yml")
    assert lab.name == name
    assert {"mgmt", "storage"} <= set(lab.networks)


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_labs_fail_with_golden_messages(path: Path) -> None:
    with pytest.raises(LabError) as info:
        load_lab(path)
    for issue in info.value.issues:
        assert issue.line >= 1 and issue.field
        assert issue.file.endswith(path.name)
    check_golden(f"errors/{path.stem}.txt", str(info.value).replace(str(ROOT) + "/", "") + "\n")


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(LabError) as info:
        load_lab(ROOT / "labs" / "broken" / "schema-errors.yml")
    fields = [i.field for i in info.value.issues]
    assert "nodes.n1.kind" in fields and "nodes.n1.memory" in fields and "nodes.n1.rolez" in fields


def test_auto_addresses_are_deterministic_and_skip_fixed_ones() -> None:
    text = """
name: addr
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.9.0.0/24}
  storage: {bridge: br-storage, cidr: 10.9.1.0/24}
images: {base: {recipe: x}}
nodes:
  a: {image: base, nics: [mgmt]}
  b: {image: base, nics: {mgmt: {address: 10.9.0.10}}}
  c: {image: base, nics: [mgmt, storage]}
"""
    lab = load_lab_text(text, "addr.yml")
    addresses = node_addresses(lab)
    assert addresses["a"]["mgmt"] == ipaddress.IPv4Address("10.9.0.11")
    assert addresses["b"]["mgmt"] == ipaddress.IPv4Address("10.9.0.10")
    assert addresses["c"]["mgmt"] == ipaddress.IPv4Address("10.9.0.12")
    assert addresses["c"]["storage"] == ipaddress.IPv4Address("10.9.1.10")
    assert node_addresses(lab) == addresses


def test_kernel_names_carry_the_lab_prefix_and_fit_15_characters() -> None:
    lab = load_lab(ROOT / "labs" / "aio.yml")
    for net in lab.networks:
        name = lab.bridge_ifname(net)
        assert name.startswith(lab.kernel_prefix) and len(name) <= 15
    other = lab.model_copy(update={"name": "aio2"})
    assert other.kernel_prefix != lab.kernel_prefix


@pytest.mark.parametrize(
    ("text", "mib"), [("512MiB", 512), ("4GiB", 4096), ("1.5G", 1536), (2048, 2048), ("1TiB", 1024 * 1024)]
)
def test_sizes(text: object, mib: int) -> None:
    assert parse_size_mib(text) == mib


@pytest.mark.parametrize("bad", ["lots", "-1", "0", "5 parsecs", True])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size_mib(bad)


def test_empty_file_and_non_mapping() -> None:
    with pytest.raises(LabError, match="empty"):
        load_lab_text("", "e.yml")
    with pytest.raises(LabError, match="mapping"):
        load_lab_text("- a\n- b\n", "l.yml")


def test_missing_file_is_a_lab_error(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="cannot read lab file"):
        load_lab(tmp_path / "nope.yml")


def test_vlan_uplink_reaches_the_bridge_spec_and_untagged_specs_stay_as_they_were() -> None:
    from stacklab.plan.expand import expand

    text = """
name: tagged
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.9.0.0/24, vlan: 120, uplink: eno1}
  storage: {bridge: br-storage, cidr: 10.9.1.0/24}
"""
    bridges = {r.name: r.spec for r in expand(load_lab_text(text, "tagged.yml")) if r.kind == "bridge"}
    assert (bridges["mgmt"]["vlan"], bridges["mgmt"]["uplink"]) == (120, "eno1")
    assert bridges["storage"]["vlan"] is None and "uplink" not in bridges["storage"]
