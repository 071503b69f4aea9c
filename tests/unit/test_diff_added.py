"""plan/diff.default_diff's migration rule: a key added to a resource's spec after a lab was recorded (`added`)
is no change when the recorded spec lacks it, so a running lab is not rebuilt for an input it never saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stacklab.drivers.openstack.services import ServiceDriver
from stacklab.drivers.storage.ceph.cluster import storage_addresses
from stacklab.drivers.storage.ceph.conf import CephSpec
from stacklab.drivers.storage.ceph.driver import CephDriver
from stacklab.model.addressing import node_addresses
from stacklab.model.load import load_lab_text
from stacklab.plan.diff import default_diff
from stacklab.plan.expand import expand
from stacklab.plan.resource import Action, Observed, Resource

OLD = {"controller": "ctl1", "address": "10.0.0.10", "hosts": ["ctl1", "cmp1"]}
NEW = {**OLD, "addresses": {"ctl1": "10.0.0.10", "cmp1": "10.0.0.11"}}
OWNED = Observed(True, {})
LABS = Path(__file__).resolve().parents[2] / "labs"


def recorded(spec: dict[str, Any]) -> dict[str, Any]:
    return {"spec": spec, "hash": Resource("service", "nova", spec).hash}


def test_a_recorded_spec_without_an_added_key_is_unchanged() -> None:
    resource = Resource("service", "nova", NEW)
    assert recorded(OLD)["hash"] != resource.hash  # the hash alone would call it a change
    change = default_diff(resource, OWNED, recorded(OLD), added=frozenset({"addresses"}))
    assert change.action is Action.NOOP


def test_without_the_rule_the_same_recorded_spec_is_replaced() -> None:
    change = default_diff(Resource("service", "nova", NEW), OWNED, recorded(OLD))
    assert change.action is Action.REPLACE and change.reasons[0].startswith("addresses: None ->")


def test_drift_still_shows_under_the_rule() -> None:
    drifting = Observed(True, {}, ("nova-api is not running",))
    change = default_diff(Resource("service", "nova", NEW), drifting, recorded(OLD), added=frozenset({"addresses"}))
    assert change.action is Action.UPDATE and change.reasons == ("drift: nova-api is not running",)


def test_an_added_key_the_recorded_spec_has_is_compared_as_usual() -> None:
    moved = {**NEW, "addresses": {"ctl1": "10.0.0.10", "cmp1": "10.0.0.12"}}
    change = default_diff(Resource("service", "nova", moved), OWNED, recorded(NEW), added=frozenset({"addresses"}),
                          updatable=frozenset({"addresses"}))  # fmt: skip
    assert change.action is Action.UPDATE and change.reasons[0].startswith("addresses:")


def test_another_change_beside_a_missing_added_key_still_counts() -> None:
    resource = Resource("service", "nova", {**NEW, "address": "10.0.0.20"})
    change = default_diff(resource, OWNED, recorded(OLD), added=frozenset({"addresses"}))
    assert change.action is Action.REPLACE and {r.split(":")[0] for r in change.reasons} == {"address", "addresses"}


def test_the_service_driver_declares_nova_addresses_added_and_updatable() -> None:
    driver = ServiceDriver()
    assert "addresses" in driver.added and "addresses" in driver.updatable
    assert driver.diff(Resource("service", "nova", NEW), OWNED, recorded(OLD)).action is Action.NOOP


def test_ceph_takes_its_nodes_storage_addresses_from_the_spec_and_a_recorded_spec_without_them_is_unchanged() -> None:
    lab = load_lab_text((LABS / "aio.yml").read_text(), "aio.yml")
    resource = next(r for r in expand(lab) if r.kind == "ceph")
    spec = CephSpec.from_spec(lab.name, resource.spec)
    wanted = {n: str(a["storage"]) for n, a in node_addresses(lab).items() if n in spec.nodes}
    assert storage_addresses(spec) == wanted and len(wanted) == 3  # what the driver once read from the Lab
    old = {k: v for k, v in resource.spec.items() if k != "storage_addresses"}
    assert CephDriver().diff(resource, OWNED, recorded(old)).action is Action.NOOP
    moved = {**resource.spec, "storage_addresses": {**resource.spec["storage_addresses"], "storage3": "10.9.9.9"}}
    assert CephDriver().diff(resource, OWNED, recorded(moved)).action is Action.REPLACE
