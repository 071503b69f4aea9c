"""The bridge driver against real netlink, inside a throwaway network namespace (the host netns is not touched).

Each test gets its own netns (`ip netns add`, deleted in the finalizer with everything inside it). The driver is
built with `netns=` so every netlink request goes there; the hand-made "foreign" objects are made the same way.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from pyroute2 import IPRoute

from stacklab.drivers.base import DriverContext
from stacklab.drivers.nodes.bridge import BridgeDriver
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.runner import LocalRunner
from stacklab.plan.resource import Action, Resource

if TYPE_CHECKING:
    from stacklab.model.lab import Lab

pytestmark = [pytest.mark.integration, pytest.mark.root]

LAB = "itest"


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (uid 0) to create a network namespace")
    name = f"stacklab-it-{secrets.token_hex(3)}"
    runner = LocalRunner()
    try:
        result = runner.run(["ip", "netns", "add", name], timeout=30, check=False)
    except StackLabError as exc:
        pytest.skip(f"cannot create a network namespace: {exc}")
    if not result.ok:
        pytest.skip(f"`ip netns add` failed: {result.stderr.strip()}")
    try:
        yield name
    finally:
        runner.run(["ip", "netns", "del", name], timeout=30, check=False)


@pytest.fixture
def driver(netns: str) -> BridgeDriver:
    return BridgeDriver(netns=netns)


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(lab=cast("Lab", None), runner=LocalRunner(), state_dir=tmp_path)


def bridge(net: str, third_octet: int, **overrides: Any) -> Resource:
    spec: dict[str, Any] = {
        "ifname": f"itbr-{net}",
        "cidr": f"10.251.{third_octet}.0/24",
        "address": f"10.251.{third_octet}.1/24",
        "mtu": 1500,
        "vlan": None,
        "marker": f"stacklab:{LAB}:bridge:{net}",
    }
    spec.update(overrides)
    return Resource("bridge", net, spec)


def converge(driver: BridgeDriver, ctx: DriverContext, res: Resource, rec: Mapping[str, Any] | None) -> Action:
    """One `up` pass for one resource: observe, diff, apply unless noop; returns the action taken."""
    change = driver.diff(res, driver.observe(res, ctx), rec)
    if change.action is not Action.NOOP:
        driver.apply(change, ctx)
    return change.action


def record(res: Resource, outputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"hash": res.hash, "spec": dict(res.spec), "outputs": dict(outputs or {})}


def link_facts(netns: str, ifname: str) -> dict[str, Any] | None:
    with IPRoute(netns=netns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        link = ipr.get_links(found[0])[0]
        addrs = sorted(f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(index=found[0], family=2))
        return {
            "index": found[0],
            "ifalias": link.get("ifalias"),
            "mtu": link.get("mtu"),
            "up": link.get("state") == "up",
            "kind": link.get(("linkinfo", "kind")),
            "addresses": addrs,
        }


def test_two_bridges_created_then_noop(driver: BridgeDriver, ctx: DriverContext, netns: str) -> None:
    mgmt, storage = bridge("mgmt", 1), bridge("storage", 2, mtu=9000)
    records = {}
    for res in (mgmt, storage):
        assert driver.observe(res, ctx) is None
        change = driver.diff(res, None, None)
        assert change.action is Action.CREATE
        outputs = driver.apply(change, ctx)
        assert outputs["ifname"] == res.spec["ifname"]
        assert outputs["address"] == res.spec["address"]
        records[res.id] = record(res, outputs)
        facts = link_facts(netns, str(res.spec["ifname"]))
        assert facts == {
            "index": outputs["index"],
            "ifalias": res.spec["marker"],
            "mtu": res.spec["mtu"],
            "up": True,
            "kind": "bridge",
            "addresses": [res.spec["address"]],
        }
    # second pass: observed owned, no drift, nothing to do
    for res in (mgmt, storage):
        observed = driver.observe(res, ctx)
        assert observed is not None and observed.owned and observed.drift == ()
        assert driver.diff(res, observed, records[res.id]).action is Action.NOOP
    # applying again anyway is harmless (idempotent netlink calls)
    again = driver.apply(driver.diff(mgmt, driver.observe(mgmt, ctx), None), ctx)
    assert again == {k: records[mgmt.id]["outputs"][k] for k in ("ifname", "index", "address")}


def test_mtu_change_and_drift_are_updated_in_place(driver: BridgeDriver, ctx: DriverContext, netns: str) -> None:
    old = bridge("mgmt", 1)
    outputs = driver.apply(driver.diff(old, None, None), ctx)
    new = bridge("mgmt", 1, mtu=9000)
    change = driver.diff(new, driver.observe(new, ctx), record(old, outputs))
    assert change.action is Action.UPDATE
    assert change.reasons == ("mtu: 1500 -> 9000",)
    assert driver.apply(change, ctx)["index"] == outputs["index"]  # same bridge, changed in place
    assert (link_facts(netns, "itbr-mgmt") or {})["mtu"] == 9000

    # someone changes the MTU and takes the bridge down by hand: drift, repaired by an update
    with IPRoute(netns=netns) as ipr:
        ipr.link("set", index=outputs["index"], mtu=1400, state="down")
    observed = driver.observe(new, ctx)
    assert observed is not None and set(observed.drift) == {"mtu 1400 (want 9000)", "state down"}
    assert converge(driver, ctx, new, record(new, outputs)) is Action.UPDATE
    assert converge(driver, ctx, new, record(new, outputs)) is Action.NOOP


def test_address_change_moves_the_address(driver: BridgeDriver, ctx: DriverContext, netns: str) -> None:
    old = bridge("mgmt", 1)
    outputs = driver.apply(driver.diff(old, None, None), ctx)
    new = bridge("mgmt", 1, address="10.251.1.254/24")
    assert converge(driver, ctx, new, record(old, outputs)) is Action.UPDATE
    assert (link_facts(netns, "itbr-mgmt") or {})["addresses"] == ["10.251.1.254/24"]


def test_cidr_change_replaces_the_bridge(driver: BridgeDriver, ctx: DriverContext, netns: str) -> None:
    old = bridge("mgmt", 1)
    outputs = driver.apply(driver.diff(old, None, None), ctx)
    new = bridge("mgmt", 9)
    change = driver.diff(new, driver.observe(new, ctx), record(old, outputs))
    assert change.action is Action.REPLACE
    new_outputs = driver.apply(change, ctx)
    assert new_outputs["index"] != outputs["index"]
    assert (link_facts(netns, "itbr-mgmt") or {})["addresses"] == ["10.251.9.1/24"]


def test_foreign_interface_with_our_name_is_refused(driver: BridgeDriver, ctx: DriverContext, netns: str) -> None:
    with IPRoute(netns=netns) as ipr:
        ipr.link("add", ifname="itbr-mgmt", kind="bridge")
    res = bridge("mgmt", 1)
    observed = driver.observe(res, ctx)
    assert observed is not None and not observed.owned
    with pytest.raises(PlanError, match="interface itbr-mgmt already exists on the host and is not this lab's"):
        driver.diff(res, observed, None)
    with pytest.raises(PlanError, match="not this lab's"):  # apply re-checks; a race cannot make it adopt
        driver.apply(driver.diff(res, None, None), ctx)
    facts = link_facts(netns, "itbr-mgmt")
    assert facts is not None and facts["ifalias"] is None and facts["addresses"] == []  # untouched


def test_cidr_already_used_by_another_interface_is_refused(
    driver: BridgeDriver, ctx: DriverContext, netns: str
) -> None:
    with IPRoute(netns=netns) as ipr:
        ipr.link("add", ifname="other0", kind="veth", peer="other1")
        index = ipr.link_lookup(ifname="other0")[0]
        ipr.addr("add", index=index, address="10.251.1.50", prefixlen=24)
    res = bridge("mgmt", 1)
    with pytest.raises(PlanError, match=r"subnet 10\.251\.1\.0/24 .* interface other0 has 10\.251\.1\.50/24"):
        driver.observe(res, ctx)
    with pytest.raises(PlanError, match="other0"):
        driver.apply(driver.diff(res, None, None), ctx)
    assert link_facts(netns, "itbr-mgmt") is None  # nothing made
    # two labs, one subnet: the second lab's bridge is refused because of the first's
    driver.apply(driver.diff(bridge("storage", 2), None, None), ctx)
    other_lab = bridge("storage", 2, ifname="itbr2-storage", marker="stacklab:otherlab:bridge:storage")
    with pytest.raises(PlanError, match="interface itbr-storage"):
        driver.observe(other_lab, ctx)


def test_delete_removes_ours_and_is_idempotent(driver: BridgeDriver, ctx: DriverContext, netns: str) -> None:
    res = bridge("mgmt", 1)
    outputs = driver.apply(driver.diff(res, None, None), ctx)
    driver.delete(res.id, record(res, outputs), ctx)
    assert link_facts(netns, "itbr-mgmt") is None
    driver.delete(res.id, record(res, outputs), ctx)  # already gone: fine
    assert driver.observe(res, ctx) is None


def test_delete_refuses_an_interface_whose_alias_is_not_ours(
    driver: BridgeDriver, ctx: DriverContext, netns: str
) -> None:
    res = bridge("mgmt", 1)
    outputs = driver.apply(driver.diff(res, None, None), ctx)
    with IPRoute(netns=netns) as ipr:
        ipr.link("set", index=outputs["index"], ifalias="somebody-else")
    with pytest.raises(StackLabError, match="refusing to delete"):
        driver.delete(res.id, record(res, outputs), ctx)
    assert link_facts(netns, "itbr-mgmt") is not None
    # an interface with our name and no alias at all is refused too
    with IPRoute(netns=netns) as ipr:
        ipr.link("set", index=outputs["index"], ifalias="")
    with pytest.raises(StackLabError, match="refusing to delete"):
        driver.delete(res.id, record(res, outputs), ctx)
    assert link_facts(netns, "itbr-mgmt") is not None


def test_failed_apply_removes_the_bridge_it_created(driver: BridgeDriver, ctx: DriverContext, netns: str) -> None:
    res = bridge("mgmt", 1, mtu=70000)  # above the bridge's max MTU (65535): netlink refuses after creation
    with pytest.raises(StackLabError, match="set mtu 70000 on itbr-mgmt failed"):
        driver.apply(driver.diff(res, None, None), ctx)
    assert link_facts(netns, "itbr-mgmt") is None


def test_failed_update_keeps_the_existing_bridge(driver: BridgeDriver, ctx: DriverContext, netns: str) -> None:
    res = bridge("mgmt", 1)
    outputs = driver.apply(driver.diff(res, None, None), ctx)
    bad = bridge("mgmt", 1, mtu=70000)
    with pytest.raises(StackLabError, match="set mtu"):
        driver.apply(driver.diff(bad, driver.observe(bad, ctx), record(res, outputs)), ctx)
    assert (link_facts(netns, "itbr-mgmt") or {})["index"] == outputs["index"]  # not ours to drop: it existed
