"""Bridge driver decisions without netlink: observations from hand-made link/address dumps, and the diff."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from stacklab.drivers.base import DriverContext, driver_for
from stacklab.drivers.nodes.bridge import (
    AddrInfo,
    BridgeDriver,
    IPRouteLike,
    LinkInfo,
    assess,
    bridge_drift,
    check_subnet_free,
    vlan_ifname,
)
from stacklab.errors import PlanError, StackLabError
from stacklab.exec.fake import FakeRunner
from stacklab.plan.resource import Action, Observed, Resource

if TYPE_CHECKING:
    from stacklab.model.lab import Lab

MARKER = "stacklab:demo:bridge:mgmt"


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ifname": "s123mgmt",
        "cidr": "10.250.1.0/24",
        "address": "10.250.1.1/24",
        "mtu": 1500,
        "vlan": None,
        "marker": MARKER,
    }
    base.update(overrides)
    return base


def bridge(**overrides: Any) -> Resource:
    return Resource("bridge", "mgmt", spec(**overrides))


def record(resource: Resource) -> dict[str, Any]:
    return {"hash": resource.hash, "spec": dict(resource.spec), "outputs": {"ifname": resource.spec["ifname"]}}


def no_netlink() -> IPRouteLike:
    raise AssertionError("this test must not open a netlink socket")


@pytest.fixture
def driver() -> BridgeDriver:
    return BridgeDriver(iproute=no_netlink, vlan_supported=lambda: False)


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(lab=cast("Lab", None), runner=FakeRunner(), state_dir=tmp_path)


OUR_LINK = LinkInfo(index=7, ifname="s123mgmt", ifalias=MARKER, mtu=1500, up=True, kind="bridge")
OUR_ADDR = AddrInfo(index=7, address="10.250.1.1/24")
ETH0 = LinkInfo(index=2, ifname="eth0", mtu=1500, up=True, kind=None)
ETH0_ADDR = AddrInfo(index=2, address="192.168.5.10/24")
LINK_LOCAL = AddrInfo(index=7, address="fe80::1/64", scope=253)


# -- observation from dumps --------------------------------------------------------------------------------------


def test_absent_bridge_is_none() -> None:
    assert assess(spec(), [ETH0], [ETH0_ADDR]) is None


def test_owned_bridge_matching_spec_has_no_drift() -> None:
    observed = assess(spec(), [ETH0, OUR_LINK], [ETH0_ADDR, OUR_ADDR, LINK_LOCAL])
    assert observed is not None
    assert observed.owned
    assert observed.drift == ()
    assert observed.facts["index"] == 7
    assert observed.facts["addresses"] == ["10.250.1.1/24"]  # the kernel's link-local address is not ours


def test_same_name_without_marker_is_not_owned() -> None:
    foreign = LinkInfo(index=9, ifname="s123mgmt", ifalias=None, kind="bridge")
    observed = assess(spec(), [foreign], [])
    assert observed is not None
    assert not observed.owned
    other_lab = LinkInfo(index=9, ifname="s123mgmt", ifalias="stacklab:other:bridge:mgmt", kind="bridge")
    observed = assess(spec(), [other_lab], [])
    assert observed is not None
    assert not observed.owned


def test_drift_mtu_address_state() -> None:
    link = LinkInfo(index=7, ifname="s123mgmt", ifalias=MARKER, mtu=1400, up=False, kind="bridge")
    stray = AddrInfo(index=7, address="10.250.1.99/24")
    assert bridge_drift(spec(), link, [stray]) == (
        "mtu 1400 (want 1500)",
        "address 10.250.1.1/24 missing",
        "unexpected address 10.250.1.99/24",
        "state down",
    )


def test_subnet_used_by_another_interface_is_refused_naming_it() -> None:
    eth1 = LinkInfo(index=3, ifname="eth1")
    with pytest.raises(PlanError, match=r"interface eth1 has 10\.250\.1\.77/24"):
        check_subnet_free(spec(), [eth1], [AddrInfo(index=3, address="10.250.1.77/24")])
    # another lab's bridge on the same subnet is named with its marker
    theirs = LinkInfo(index=4, ifname="s999mgmt", ifalias="stacklab:other:bridge:mgmt")
    with pytest.raises(PlanError, match=r"s999mgmt \(ifalias 'stacklab:other:bridge:mgmt'\)"):
        assess(spec(), [theirs], [AddrInfo(index=4, address="10.250.1.1/24")])


def test_subnet_check_ignores_our_own_bridges_and_other_subnets() -> None:
    renamed = LinkInfo(index=8, ifname="s123oldname", ifalias=MARKER)  # ours, about to be replaced
    addrs = [OUR_ADDR, AddrInfo(index=8, address="10.250.1.2/24"), ETH0_ADDR, AddrInfo(2, "10.250.2.1/24")]
    check_subnet_free(spec(), [OUR_LINK, renamed, ETH0], addrs)


def test_vlan_name_fits_the_kernel_limit() -> None:
    assert vlan_ifname("s123mgmt", 100) == "s123mgmt.100"
    assert vlan_ifname("s123-storage-x", 4094) == "s123-stora.4094"
    assert len(vlan_ifname("a" * 15, 4094)) == 15


def test_vlan_without_8021q_is_refused_before_netlink(driver: BridgeDriver, ctx: DriverContext) -> None:
    with pytest.raises(PlanError, match=r"802\.1Q") as info:
        driver.observe(bridge(vlan=100), ctx)
    assert info.value.hint is not None and "VXLAN" in info.value.hint
    with pytest.raises(PlanError, match=r"802\.1Q"):
        driver.apply(driver.diff(bridge(vlan=100), None, None), ctx)


# -- diff decisions ------------------------------------------------------------------------------------------------


def owned(*drift: str) -> Observed:
    return Observed(owned=True, facts={"ifname": "s123mgmt", "index": 7}, drift=tuple(drift))


def test_missing_bridge_is_created(driver: BridgeDriver) -> None:
    assert driver.diff(bridge(), None, None).action is Action.CREATE
    change = driver.diff(bridge(), None, record(bridge()))
    assert change.action is Action.CREATE
    assert change.reasons == ("recorded in state but missing on the host",)


def test_unchanged_owned_bridge_is_noop(driver: BridgeDriver) -> None:
    assert driver.diff(bridge(), owned(), record(bridge())).action is Action.NOOP


def test_unowned_interface_is_a_plan_error_naming_it(driver: BridgeDriver) -> None:
    foreign = Observed(owned=False, facts={"ifname": "s123mgmt", "ifalias": "someone else"})
    with pytest.raises(PlanError, match=r"interface s123mgmt .*not this lab's \(ifalias 'someone else'") as info:
        driver.diff(bridge(), foreign, None)
    assert info.value.resource == "bridge/mgmt"


def test_drift_is_an_update(driver: BridgeDriver) -> None:
    change = driver.diff(bridge(), owned("mtu 1400 (want 1500)"), record(bridge()))
    assert change.action is Action.UPDATE
    assert change.reasons == ("drift: mtu 1400 (want 1500)",)


def test_mtu_change_is_an_update_in_place(driver: BridgeDriver) -> None:
    change = driver.diff(bridge(mtu=9000), owned(), record(bridge()))
    assert change.action is Action.UPDATE
    assert change.reasons == ("mtu: 1500 -> 9000",)


def test_address_change_is_an_update_in_place(driver: BridgeDriver) -> None:
    change = driver.diff(bridge(address="10.250.1.254/24"), owned(), record(bridge()))
    assert change.action is Action.UPDATE


def test_cidr_change_is_a_replace(driver: BridgeDriver) -> None:
    new = bridge(cidr="10.250.9.0/24", address="10.250.9.1/24")
    change = driver.diff(new, owned(), record(bridge()))
    assert change.action is Action.REPLACE
    assert "cidr: '10.250.1.0/24' -> '10.250.9.0/24'" in change.reasons


@pytest.mark.parametrize("key,value", [("ifname", "s123mgmt2"), ("vlan", 10), ("marker", "stacklab:x:bridge:y")])
def test_other_changes_replace(driver: BridgeDriver, key: str, value: Any) -> None:
    assert driver.diff(bridge(**{key: value}), owned(), record(bridge())).action is Action.REPLACE


def test_owned_but_unrecorded_is_adopted(driver: BridgeDriver) -> None:
    change = driver.diff(bridge(), owned(), None)
    assert change.action is Action.UPDATE
    assert change.reasons == ("owned but not recorded: adopting",)


def test_registered_as_bridge() -> None:
    import stacklab.drivers.nodes.bridge  # noqa: F401  (registers on import)

    found = driver_for("bridge")
    assert isinstance(found, BridgeDriver)
    assert found.netns is None
    assert found.updatable == frozenset({"mtu", "address"})


def test_delete_without_marker_in_state_refuses(driver: BridgeDriver, ctx: DriverContext) -> None:
    recorded: Mapping[str, Any] = {"spec": {"ifname": "s123mgmt"}}
    with pytest.raises(StackLabError, match="ownership marker"):
        driver.delete("bridge/mgmt", recorded, ctx)
