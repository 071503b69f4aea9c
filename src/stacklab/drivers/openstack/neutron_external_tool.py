"""Runs on the controller (python3 with keystoneauth1 from the OpenStack image): the lab's external network in
neutron, idempotently. Reads one JSON request on stdin (the admin password never in argv):

    {"auth_url": ..., "admin_password": ..., "region": "RegionOne", "action": "ensure" | "check" | "remove",
     "network": {"name": "stacklab-external", "physnet": "external", "cidr": "10.244.30.0/24",
                 "gateway": "10.244.30.1", "pool": ["10.244.30.100", "10.244.30.150"],
                 "marker": "stacklab:LAB:external-network:stacklab-external"}}

`ensure` makes the network (flat on `physnet`, `router:external`, the marker as its description) and its one
subnet (the cidr, the gateway, the pool as its only allocation pool, no DHCP) when missing, and sets the subnet's
gateway and pool when they differ; it refuses (exit 1, the reason on stderr) a network of that name without the
marker (not the lab's) or one whose provider attributes or cidr differ (neutron cannot change those: it names what
to delete). `check` reports the same differences without changing anything. `remove` deletes the marked network
(its subnet goes with it); neutron refuses while a router's gateway or a floating IP is on it, and so does this.
Prints one JSON line: {"changed": [...]} or {"problems": [...]}. stacklab uploads and runs this file; it is not
imported by stacklab itself (its unit tests call `handle` with a fake API).
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

Call = Callable[[str, str, Any], tuple[int, Any]]  # (method, path, body) -> (HTTP status, decoded JSON body)


class Refused(Exception):
    """What this tool will not do; main() prints it on stderr and exits 1."""


def _ok(call: Call, method: str, path: str, body: Any = None) -> Any:
    status, data = call(method, path, body)
    if status >= 300:
        raise Refused(f"{method} {path}: HTTP {status}: {json.dumps(data)[:300]}")
    return data


def _network_body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": spec["name"],
        "description": spec["marker"],
        "router:external": True,
        "shared": False,
        "provider:network_type": "flat",
        "provider:physical_network": spec["physnet"],
        "admin_state_up": True,
    }


def _subnet_wanted(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "gateway_ip": spec["gateway"],
        "allocation_pools": [{"start": spec["pool"][0], "end": spec["pool"][1]}],
        "enable_dhcp": False,
    }


def _find(call: Call, spec: dict[str, Any]) -> dict[str, Any] | None:
    name = urllib.parse.quote(spec["name"])
    found = _ok(call, "GET", f"/v2.0/networks?name={name}")["networks"]
    if len(found) > 1:
        raise Refused(f"{len(found)} networks are named {spec['name']}: {[n['id'] for n in found]}")
    if found and found[0].get("description") != spec["marker"]:
        raise Refused(
            f"network {spec['name']} ({found[0]['id']}) exists and is not this lab's (its description is not "
            f"{spec['marker']!r}); not touching it"
        )
    return found[0] if found else None


def _network_differences(network: dict[str, Any], spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(what can be changed in place, what cannot) between the network and the spec."""
    fixed = [
        f"{key} is {network.get(key)!r}, not {value!r}"
        for key, value in _network_body(spec).items()
        if key.startswith("provider:") and network.get(key) != value
    ]
    settable = [] if network.get("router:external") else ["router:external is off"]
    return settable, fixed


def _subnets(call: Call, network_id: str) -> list[dict[str, Any]]:
    return list(_ok(call, "GET", f"/v2.0/subnets?network_id={network_id}")["subnets"])


def _subnet_differences(subnet: dict[str, Any], spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    fixed = [] if subnet.get("cidr") == spec["cidr"] else [f"its subnet's cidr is {subnet.get('cidr')}"]
    settable = [f"its subnet's {key} is {subnet.get(key)!r}, not {value!r}"
                for key, value in _subnet_wanted(spec).items() if subnet.get(key) != value]  # fmt: skip
    return settable, fixed


def check(call: Call, spec: dict[str, Any]) -> list[str]:
    """How neutron's external network differs from the spec (empty: as planned)."""
    network = _find(call, spec)
    if network is None:
        return [f"the external network {spec['name']} is missing"]
    settable, fixed = _network_differences(network, spec)
    problems = [*settable, *fixed]
    subnets = _subnets(call, network["id"])
    if len(subnets) != 1:
        problems.append(f"it has {len(subnets)} subnets, not 1")
    else:
        more, more_fixed = _subnet_differences(subnets[0], spec)
        problems += [*more, *more_fixed]
    return [f"the external network {spec['name']}: {p}" for p in problems]


def ensure(call: Call, spec: dict[str, Any]) -> list[str]:
    """Make or correct the network and its subnet; what changed."""
    changed: list[str] = []
    network = _find(call, spec)
    if network is None:
        network = _ok(call, "POST", "/v2.0/networks", {"network": _network_body(spec)})["network"]
        changed.append(f"network {spec['name']}")
    settable, fixed = _network_differences(network, spec)
    if fixed:
        raise Refused(
            f"the external network {spec['name']}: {'; '.join(fixed)}: neutron cannot change that; delete the network "
            "(and the routers and floating IPs on it) and run up again"
        )
    if settable:
        _ok(call, "PUT", f"/v2.0/networks/{network['id']}", {"network": {"router:external": True}})
        changed.append(f"network {spec['name']}: router:external")
    subnets = _subnets(call, network["id"])
    if len(subnets) > 1:
        raise Refused(f"the external network {spec['name']} has {len(subnets)} subnets; stacklab made one")
    if not subnets:
        body = {"name": spec["name"], "network_id": network["id"], "ip_version": 4, "cidr": spec["cidr"],
                **_subnet_wanted(spec)}  # fmt: skip
        _ok(call, "POST", "/v2.0/subnets", {"subnet": body})
        changed.append(f"subnet {spec['cidr']}")
        return changed
    settable, fixed = _subnet_differences(subnets[0], spec)
    if fixed:
        raise Refused(
            f"the external network {spec['name']}: {'; '.join(fixed)}, not {spec['cidr']}: delete the network (and the "
            "routers and floating IPs on it) and run up again"
        )
    if settable:
        _ok(call, "PUT", f"/v2.0/subnets/{subnets[0]['id']}", {"subnet": _subnet_wanted(spec)})
        changed.append(f"subnet {spec['cidr']}: {'; '.join(settable)}")
    return changed


def remove(call: Call, spec: dict[str, Any]) -> list[str]:
    network = _find(call, spec)
    if network is None:
        return []
    status, data = call("DELETE", f"/v2.0/networks/{network['id']}", None)
    if status == 409:
        ports = _ok(call, "GET", f"/v2.0/ports?network_id={network['id']}")["ports"]
        owners = sorted(f"{p['id']} ({p.get('device_owner') or 'no owner'})" for p in ports)
        raise Refused(f"the external network {spec['name']} is in use: {', '.join(owners) or json.dumps(data)[:300]}")
    if status >= 300 and status != 404:
        raise Refused(f"DELETE network {network['id']}: HTTP {status}: {json.dumps(data)[:300]}")
    return [f"deleted network {spec['name']}"]


def handle(request: dict[str, Any], call: Call) -> dict[str, list[str]]:
    spec, action = request["network"], request["action"]
    if action == "check":
        return {"problems": check(call, spec)}
    if action == "ensure":
        return {"changed": ensure(call, spec)}
    if action == "remove":
        return {"changed": remove(call, spec)}
    raise Refused(f"unknown action {action!r}")


def _session_call(request: dict[str, Any]) -> Call:
    from keystoneauth1 import session  # type: ignore[import-not-found, unused-ignore]
    from keystoneauth1.identity import v3  # type: ignore[import-not-found, unused-ignore]

    auth = v3.Password(auth_url=request["auth_url"], username="admin", password=request["admin_password"],
                       project_name="admin", user_domain_name="Default", project_domain_name="Default")  # fmt: skip
    sess = session.Session(auth=auth, timeout=60)
    endpoint = {"service_type": "network", "interface": "public", "region_name": request.get("region")}

    def call(method: str, path: str, body: Any) -> tuple[int, Any]:
        response = sess.request(path, method, endpoint_filter=endpoint, json=body, raise_exc=False)
        return int(response.status_code), (response.json() if response.text else {})

    return call


def main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        result = handle(request, _session_call(request))
    except Refused as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(1) from None
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
