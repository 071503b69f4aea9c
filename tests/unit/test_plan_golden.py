"""Golden plans: every example lab expands to the same resources, specs and dependencies (netlab-style)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stacklab.model import load_lab
from stacklab.plan.dag import build_graph, topological_order
from stacklab.plan.expand import USERSPACE_CHOICES, expand
from tests.golden_util import check_golden

ROOT = Path(__file__).resolve().parents[2]
LABS = sorted((ROOT / "labs").glob("*.yml"))

FULL_KERNEL = {
    **USERSPACE_CHOICES,
    "node_kind": "vm",
    "accel": "kvm",
    "iscsi_target": "lio",
    "nfs_server": "knfsd",
    "ceph": "cephadm",
    "block_volumes": "lvm",
}


@pytest.mark.parametrize("path", LABS, ids=[p.stem for p in LABS])
@pytest.mark.parametrize(("host", "choices"), [("userspace", USERSPACE_CHOICES), ("full", FULL_KERNEL)])
def test_golden_plan(path: Path, host: str, choices: dict[str, str]) -> None:
    resources = expand(load_lab(path), choices)
    order = topological_order(build_graph(resources))
    by_id = {r.id: r for r in resources}
    doc = [{"id": rid, "deps": list(by_id[rid].deps), "spec": by_id[rid].spec} for rid in order]
    check_golden(f"plans/{path.stem}.{host}.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")


def test_dependencies_point_at_defined_resources_and_have_no_cycle() -> None:
    for path in LABS:
        resources = expand(load_lab(path))
        order = topological_order(build_graph(resources))
        assert len(order) == len(resources)


def test_cycle_error_names_the_edge() -> None:
    from stacklab.errors import PlanError
    from stacklab.plan.resource import Resource

    resources = [Resource("a", "1", {}, ("b/2",)), Resource("b", "2", {}, ("a/1",))]
    with pytest.raises(PlanError, match="dependency cycle") as info:
        topological_order(build_graph(resources))
    assert info.value.hint and "remove the dependency" in info.value.hint
