"""The `bridge` resource: one Linux bridge per lab network, made with pyroute2 (netlink, no `ip` commands).

Ownership: the bridge's ifalias (IFLA_IFALIAS) carries the lab's marker (`stacklab:<lab>:bridge:<net>`). An
interface of the same name without that alias is foreign: it is never adopted, changed or deleted.

Two labs must not share a subnet: observe() refuses a network whose CIDR already holds an address of another
interface on the host (the error names that interface).

After a failure, apply() leaves nothing it created: a bridge it made in this call is deleted again. A bridge that
existed before the call (ours, being updated) stays, possibly half-updated; the next `up` sees the drift and
finishes the job. Between the netlink "create" and the "set ifalias" (two calls: the kernel ignores IFLA_IFALIAS
on creation) there is a window of microseconds in which a crash would leave an unmarked bridge; the next `up` then
reports it as a foreign interface, which is the safe side.

VLANs: a network with `vlan` set needs an 802.1Q sub-interface of a host uplink enslaved to the bridge. Kernels
without 8021q (the CI host type) cannot do that; the driver says so before touching anything and points at VXLAN.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from pyroute2.netlink.exceptions import NetlinkError

from stacklab.drivers.base import BaseDriver, Driver, DriverContext, register
from stacklab.errors import PlanError, StackLabError
from stacklab.plan.resource import Action, Change, Observed, Resource

LOG = logging.getLogger(__name__)

IFNAMSIZ = 15  # kernel interface names: 15 characters at most
_IFF_UP = 0x1
_RT_SCOPE_UNIVERSE = 0
_EEXIST = 17
_ENODEV = 19
_EADDRNOTAVAIL = 99

VLAN_HINT = (
    "802.1Q VLANs need a full kernel with the 8021q module (this one has none); drop `vlan` from the network, "
    "or separate networks with VXLAN, which works on this kernel"
)


class IPRouteLike(Protocol):
    """The part of pyroute2's IPRoute the driver uses (so tests can hand in a fake)."""

    def link(self, command: str, **kwargs: Any) -> Any: ...

    def addr(self, command: str, **kwargs: Any) -> Any: ...

    def get_links(self, *argv: Any, **kwargs: Any) -> Any: ...

    def get_addr(self, **kwargs: Any) -> Any: ...

    def close(self) -> None: ...


IPRouteFactory = Callable[[], IPRouteLike]


def iproute_factory(netns: str | None = None) -> IPRouteFactory:
    """An IPRoute opener for the host netns (None) or a named netns (integration tests use a throwaway one)."""

    def open_iproute() -> IPRouteLike:
        from pyroute2 import IPRoute

        handle: IPRouteLike = IPRoute(netns=netns) if netns else IPRoute()
        return handle

    return open_iproute


def kernel_has_8021q(root: Path = Path("/")) -> bool:
    """802.1Q is usable when 8021q is loaded (/proc/net/vlan) or loadable (a module in /lib/modules)."""
    if (root / "proc/net/vlan").is_dir():
        return True
    release = os.uname().release
    return (root / "lib/modules" / release / "kernel/net/8021q").is_dir()


# ----------------------------------------------------------------------------------------------------------------
# What netlink tells us, reduced to plain data (the pure logic below works on these; tests build them by hand).


@dataclass(frozen=True)
class LinkInfo:
    index: int
    ifname: str
    ifalias: str | None = None
    mtu: int = 1500
    up: bool = False
    kind: str | None = None


@dataclass(frozen=True)
class AddrInfo:
    index: int
    address: str  # "a.b.c.d/len" (or IPv6)
    scope: int = _RT_SCOPE_UNIVERSE

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        return ipaddress.ip_interface(self.address)


def link_from_msg(msg: Any) -> LinkInfo:
    return LinkInfo(
        index=int(msg["index"]),
        ifname=str(msg.get("ifname")),
        ifalias=msg.get("ifalias") or None,
        mtu=int(msg.get("mtu") or 0),
        up=bool(int(msg.get("flags") or 0) & _IFF_UP),
        kind=msg.get(("linkinfo", "kind")),
    )


def addr_from_msg(msg: Any) -> AddrInfo:
    return AddrInfo(
        index=int(msg["index"]),
        address=f"{msg.get('address')}/{msg['prefixlen']}",
        scope=int(msg.get("scope") or 0),
    )


def read_host(ipr: IPRouteLike) -> tuple[list[LinkInfo], list[AddrInfo]]:
    """Every link and every address of the netns (one dump each)."""
    links = [link_from_msg(m) for m in ipr.get_links()]
    addrs = [addr_from_msg(m) for m in ipr.get_addr()]
    return links, addrs


# ----------------------------------------------------------------------------------------------------------------
# Pure decisions.


def find_link(links: Iterable[LinkInfo], ifname: str) -> LinkInfo | None:
    return next((link for link in links if link.ifname == ifname), None)


def global_addresses(addrs: Iterable[AddrInfo], index: int) -> list[str]:
    """The addresses the lab manages on a link: scope global only (IPv6 link-local addresses are the kernel's)."""
    return sorted(a.address for a in addrs if a.index == index and a.scope == _RT_SCOPE_UNIVERSE)


def check_subnet_free(spec: Mapping[str, Any], links: Sequence[LinkInfo], addrs: Iterable[AddrInfo]) -> None:
    """Raise PlanError if another interface already has an address inside the network's CIDR.

    Interfaces carrying this resource's own marker are exempt: they are ours (the bridge itself, or its
    predecessor under an old name that a replace is about to remove).
    """
    cidr = ipaddress.ip_network(str(spec["cidr"]), strict=False)
    by_index = {link.index: link for link in links}
    for addr in addrs:
        link = by_index.get(addr.index)
        if link is None or link.ifalias == spec["marker"]:
            continue
        ip = addr.interface.ip
        if ip.version == cidr.version and ip in cidr:
            owner = f" (ifalias {link.ifalias!r})" if link.ifalias else ""
            raise PlanError(
                f"subnet {cidr} is already in use on this host: interface {link.ifname}{owner} has {addr.address}",
                hint="two labs cannot share a subnet: give this network another cidr in the lab file, "
                "or remove the other lab first (`stacklab down`)",
            )


def bridge_drift(spec: Mapping[str, Any], link: LinkInfo, addrs: Iterable[AddrInfo]) -> tuple[str, ...]:
    """How an owned bridge differs from its spec, in words (empty when it matches)."""
    drift: list[str] = []
    if link.kind is not None and link.kind != "bridge":
        drift.append(f"kind {link.kind} (want bridge)")
    if spec.get("mtu") is not None and link.mtu != int(spec["mtu"]):
        drift.append(f"mtu {link.mtu} (want {spec['mtu']})")
    present = global_addresses(addrs, link.index)
    wanted = spec.get("address")
    if wanted and wanted not in present:
        drift.append(f"address {wanted} missing")
    drift.extend(f"unexpected address {a}" for a in present if a != wanted)
    if not link.up:
        drift.append("state down")
    return tuple(drift)


def assess(spec: Mapping[str, Any], links: Sequence[LinkInfo], addrs: Sequence[AddrInfo]) -> Observed | None:
    """Observation of one bridge from a netlink dump; raises PlanError when the subnet is taken."""
    check_subnet_free(spec, links, addrs)
    link = find_link(links, str(spec["ifname"]))
    if link is None:
        return None
    facts: dict[str, Any] = {
        "ifname": link.ifname,
        "index": link.index,
        "ifalias": link.ifalias,
        "kind": link.kind,
        "mtu": link.mtu,
        "up": link.up,
        "addresses": global_addresses(addrs, link.index),
    }
    if link.ifalias != spec["marker"]:
        return Observed(owned=False, facts=facts)
    return Observed(owned=True, facts=facts, drift=bridge_drift(spec, link, addrs))


def vlan_ifname(ifname: str, vlan: int) -> str:
    """Name of the 802.1Q sub-interface that feeds a bridge: `<bridge>.<vlan>`, cut to the kernel limit."""
    suffix = f".{vlan}"
    return f"{ifname[: IFNAMSIZ - len(suffix)]}{suffix}"


# ----------------------------------------------------------------------------------------------------------------


class BridgeDriver(BaseDriver):
    """Linux bridges through netlink; `netns` confines the driver to a named netns (tests), None = host."""

    kind = "bridge"
    updatable = frozenset({"mtu", "address"})

    def __init__(
        self,
        netns: str | None = None,
        *,
        iproute: IPRouteFactory | None = None,
        vlan_supported: Callable[[], bool] = kernel_has_8021q,
    ) -> None:
        self.netns = netns
        self._iproute = iproute or iproute_factory(netns)
        self._vlan_supported = vlan_supported

    @contextmanager
    def _ipr(self) -> Iterator[IPRouteLike]:
        ipr = self._iproute()
        try:
            yield ipr
        finally:
            ipr.close()

    # -- contract ------------------------------------------------------------------------------------------------

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        self._check_vlan(resource)
        with self._ipr() as ipr:
            links, addrs = read_host(ipr)
        try:
            return assess(resource.spec, links, addrs)
        except PlanError as exc:
            exc.resource = resource.id
            raise

    def diff(self, resource: Resource, observed: Observed | None, recorded: Mapping[str, Any] | None) -> Change:
        if observed is not None and not observed.owned:
            raise PlanError(
                f"interface {resource.spec['ifname']} already exists on the host and is not this lab's "
                f"(ifalias {observed.facts.get('ifalias')!r}, expected {resource.spec['marker']!r})",
                resource=resource.id,
                hint="rename the network's bridge in the lab file or set another lab prefix; "
                "stacklab never touches interfaces it did not create",
            )
        return super().diff(resource, observed, recorded)

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        resource = change.resource
        spec = resource.spec
        ifname = str(spec["ifname"])
        marker = str(spec["marker"])
        self._check_vlan(resource)
        with self._ipr() as ipr:
            links, addrs = read_host(ipr)
            assess(spec, links, addrs)  # subnet still free (raises PlanError)
            link = find_link(links, ifname)
            if link is not None and link.ifalias != marker:
                raise PlanError(
                    f"interface {ifname} exists and is not this lab's (ifalias {link.ifalias!r}); not touching it",
                    resource=resource.id,
                )
            if link is not None and (change.action is Action.REPLACE or link.kind != "bridge"):
                LOG.info("%s: removing %s before re-creating it", resource.id, ifname)
                self._del_link(ipr, link.index, resource.id)
                link = None
            created = link is None
            if link is None:
                LOG.info("%s: creating bridge %s", resource.id, ifname)
                index = self._create_bridge(ipr, ifname, marker, resource.id)
            else:
                index = link.index
            try:
                outputs = self._converge(ipr, resource, index)
            except BaseException:
                if created:
                    LOG.warning("%s: apply failed, removing bridge %s it created", resource.id, ifname)
                    self._delete_created(ipr, index, resource.id)
                raise
        return outputs

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        spec: Mapping[str, Any] = recorded.get("spec", {})
        outputs: Mapping[str, Any] = recorded.get("outputs", {})
        ifname = str(spec.get("ifname") or outputs.get("ifname") or "")
        marker = spec.get("marker")
        if not ifname or not marker:
            raise StackLabError(
                "the state file names no interface or ownership marker for this bridge; nothing deleted",
                resource=resource_id,
                hint="remove the bridge by hand (`ip link del <name>`) if it still exists",
            )
        names = [ifname]
        if outputs.get("vlan_ifname"):
            names.insert(0, str(outputs["vlan_ifname"]))
        with self._ipr() as ipr:
            links, _addrs = read_host(ipr)
            for name in names:
                link = find_link(links, name)
                if link is None:
                    LOG.info("%s: %s already gone", resource_id, name)
                    continue
                if link.ifalias != marker:
                    raise StackLabError(
                        f"interface {name} carries ifalias {link.ifalias!r}, not this lab's marker {marker!r}: "
                        "refusing to delete it",
                        resource=resource_id,
                        hint="it is not ours (or was re-created by someone else); remove it by hand if it is a "
                        "leftover",
                    )
                LOG.info("%s: deleting %s", resource_id, name)
                self._del_link(ipr, link.index, resource_id)

    # -- steps ---------------------------------------------------------------------------------------------------

    def _check_vlan(self, resource: Resource) -> None:
        if resource.spec.get("vlan") is not None and not self._vlan_supported():
            raise PlanError(
                f"network uses VLAN {resource.spec['vlan']}, but this kernel has no 802.1Q (8021q) support",
                resource=resource.id,
                hint=VLAN_HINT,
            )

    def _create_bridge(self, ipr: IPRouteLike, ifname: str, marker: str, rid: str) -> int:
        _netlink(rid, f"create bridge {ifname}", lambda: ipr.link("add", ifname=ifname, kind="bridge"))
        index = _lookup(ipr, ifname)
        if index is None:
            raise StackLabError(f"bridge {ifname} vanished right after it was created", resource=rid)
        try:
            # The ownership mark goes on at once: the kernel ignores IFLA_IFALIAS in the create request.
            _netlink(rid, f"mark {ifname}", lambda: ipr.link("set", index=index, ifalias=marker))
        except BaseException:
            self._delete_created(ipr, index, rid)
            raise
        return index

    def _converge(self, ipr: IPRouteLike, resource: Resource, index: int) -> dict[str, Any]:
        """Make an existing, owned bridge match the spec: mtu, addresses, VLAN uplink, state up."""
        spec = resource.spec
        rid = resource.id
        ifname = str(spec["ifname"])
        _links, addrs = read_host(ipr)
        if spec.get("mtu") is not None:
            mtu = int(spec["mtu"])
            _netlink(rid, f"set mtu {mtu} on {ifname}", lambda: ipr.link("set", index=index, mtu=mtu))
        wanted = spec.get("address")
        for present in global_addresses(addrs, index):
            if present != wanted:
                LOG.info("%s: removing address %s from %s", rid, present, ifname)
                _netlink(
                    rid,
                    f"remove address {present} from {ifname}",
                    partial(_addr, ipr, "del", index, present),
                    ignore=(_EADDRNOTAVAIL,),
                )
        if wanted:
            _netlink(
                rid,
                f"add address {wanted} to {ifname}",
                partial(_addr, ipr, "add", index, str(wanted)),
                ignore=(_EEXIST,),
            )
        outputs: dict[str, Any] = {"ifname": ifname, "index": index, "address": wanted}
        if spec.get("vlan") is not None:
            outputs["vlan_ifname"] = self._vlan_uplink(ipr, resource, index)
        _netlink(rid, f"bring {ifname} up", lambda: ipr.link("set", index=index, state="up"))
        return outputs

    def _vlan_uplink(self, ipr: IPRouteLike, resource: Resource, bridge_index: int) -> str:
        """802.1Q sub-interface of spec["uplink"] enslaved to the bridge (full kernels only)."""
        spec = resource.spec
        rid = resource.id
        uplink = spec.get("uplink")
        if not uplink:
            raise PlanError(
                f"network uses VLAN {spec['vlan']} but names no host uplink interface to tag it on",
                resource=rid,
                hint="set the network's uplink, or drop `vlan` and use VXLAN between nodes",
            )
        name = vlan_ifname(str(spec["ifname"]), int(spec["vlan"]))
        marker = str(spec["marker"])
        parent = _lookup(ipr, str(uplink))
        if parent is None:
            raise PlanError(f"VLAN uplink interface {uplink} does not exist on this host", resource=rid)
        existing = _lookup(ipr, name)
        created = existing is None
        if existing is None:
            _netlink(
                rid,
                f"create VLAN {spec['vlan']} on {uplink}",
                lambda: ipr.link("add", ifname=name, kind="vlan", link=parent, vlan_id=int(spec["vlan"])),
                hint=VLAN_HINT,
            )
            existing = _lookup(ipr, name)
            if existing is None:
                raise StackLabError(f"VLAN interface {name} vanished right after it was created", resource=rid)
        index = existing
        try:
            _netlink(rid, f"mark {name}", lambda: ipr.link("set", index=index, ifalias=marker))
            _netlink(rid, f"enslave {name}", lambda: ipr.link("set", index=index, master=bridge_index, state="up"))
        except BaseException:
            if created:
                self._delete_created(ipr, index, rid)
            raise
        return name

    def _del_link(self, ipr: IPRouteLike, index: int, rid: str) -> None:
        _netlink(rid, f"delete interface #{index}", lambda: ipr.link("del", index=index), ignore=(_ENODEV,))

    def _delete_created(self, ipr: IPRouteLike, index: int, rid: str) -> None:
        try:
            self._del_link(ipr, index, rid)
        except StackLabError as exc:  # report the original failure, not the clean-up's
            LOG.error("%s: could not remove the half-made bridge #%s: %s", rid, index, exc)


def _lookup(ipr: IPRouteLike, ifname: str) -> int | None:
    found = find_link((link_from_msg(m) for m in ipr.get_links()), ifname)
    return None if found is None else found.index


def _addr(ipr: IPRouteLike, command: str, index: int, address: str) -> Any:
    iface = ipaddress.ip_interface(address)
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    return ipr.addr(command, index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen, family=family)


def _netlink(
    rid: str,
    what: str,
    call: Callable[[], Any],
    *,
    ignore: tuple[int, ...] = (),
    hint: str | None = None,
) -> None:
    """Run one netlink request; errno codes in `ignore` mean "already so" (idempotence), others raise."""
    try:
        call()
    except NetlinkError as exc:
        if exc.code in ignore:
            LOG.debug("%s: %s: already done (%s)", rid, what, exc)
            return
        raise StackLabError(
            f"netlink: {what} failed: {os.strerror(exc.code)} ({exc.code})", resource=rid, hint=hint
        ) from exc


@register("bridge")
def _factory() -> Driver:
    return BridgeDriver()
