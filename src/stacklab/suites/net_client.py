"""Runs on a lab node with plain python3, beside os_client.py (whose login and HTTP helpers it uses): the `network`
suite's calls to neutron and nova, as a tenant's tooling makes them.

Usage: net_client.py ACTION, with one JSON request on stdin (keystone's admin password in it, never in argv):
  setup    {"name", "cidr", "pool",       a network (VXLAN, neutron's choice), a subnet on `cidr` with DHCP
            "ports"}                      handing out only `pool` ([first, last]), a
                                          security group allowing ICMP in (and, as every group, everything out),
                                          and `ports` ports in that group: ids, VNI, the ICMP rule, each port's
                                          address and MAC
  rule_del {"rule_id"}                    delete a security group rule: http
  rule_add {"group_id"}                   the ICMP ingress rule again: its id
  port     {"port_id"}                    the port as neutron shows it: status, binding host, vif_type (and its
                                          details), addresses
  agents   {}                             neutron's agents: host, agent_type, alive of each
  boot     {"name", "image_id", "port_id", "user_data", "zone", "ram", "vcpus", "disk"}   boot on that port in
                                          `zone` (`zone:host` pins the compute), wait until ACTIVE (or ERROR): id,
                                          status, host, fault
  teardown {"ports", "group_id", "network_id"}   delete them (servers first, by the caller): the HTTP statuses
Every request also has "auth_url" and "password" (keystone's admin). Prints one JSON line.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from os_client import COMPUTE_API, call, flavor_id, json_call, login, wait_server  # type: ignore[import-not-found]

JSON = {"Content-Type": "application/json"}
ICMP_IN = {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}


class Neutron:
    def __init__(self, req: dict[str, Any]) -> None:
        self.token, self.url = login(req, "network")

    def send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return json_call(self.token, JSON, method, f"{self.url}/v2.0{path}", body)  # type: ignore[no-any-return]

    def make(self, path: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.send("POST", path, {kind: body})
        if status != 201:
            raise SystemExit(f"neutron refused the {kind}: HTTP {status}: {answer}")
        return dict(answer[kind])


def setup(req: dict[str, Any]) -> dict[str, Any]:
    net = Neutron(req)
    network = net.make("/networks", "network", {"name": req["name"]})
    first, last = req["pool"]
    subnet = net.make("/subnets", "subnet", {"network_id": network["id"], "ip_version": 4, "cidr": req["cidr"],
                                             "allocation_pools": [{"start": first, "end": last}],
                                             "enable_dhcp": True, "name": req["name"]})  # fmt: skip
    group = net.make("/security-groups", "security_group", {"name": req["name"]})
    rule = net.make("/security-group-rules", "security_group_rule", {**ICMP_IN, "security_group_id": group["id"]})
    ports = []
    for i in range(int(req["ports"])):
        port = net.make("/ports", "port", {"network_id": network["id"], "name": f"{req['name']}-{i}",
                                           "security_groups": [group["id"]]})  # fmt: skip
        ports.append({"id": port["id"], "mac": port["mac_address"],
                      "address": next(ip["ip_address"] for ip in port["fixed_ips"])})  # fmt: skip
    return {"network_id": network["id"], "network_type": network.get("provider:network_type"),
            "vni": network.get("provider:segmentation_id"), "mtu": network.get("mtu"), "subnet_id": subnet["id"],
            "gateway": subnet.get("gateway_ip"), "group_id": group["id"], "rule_id": rule["id"],
            "ports": ports}  # fmt: skip


def boot(req: dict[str, Any]) -> dict[str, Any]:
    token, url = login(req, "compute")
    user_data = base64.b64encode(req["user_data"].encode()).decode()
    body = {"server": {"name": req["name"], "imageRef": req["image_id"], "flavorRef": flavor_id(token, url, req),
                       "networks": [{"port": req["port_id"]}], "user_data": user_data,
                       "availability_zone": req["zone"]}}  # fmt: skip
    status, _, data = call("POST", f"{url}/servers", token, json.dumps(body).encode(), COMPUTE_API)
    if status != 202:
        raise SystemExit(f"nova refused the server: HTTP {status}: {data[:500]!r}")
    server_id = json.loads(data)["server"]["id"]
    return {"id": server_id, **wait_server(token, url, server_id, {"ACTIVE"})}


def main() -> None:
    action = sys.argv[1]
    req = json.loads(sys.stdin.read())
    out: dict[str, Any]
    if action == "setup":
        out = setup(req)
    elif action == "boot":
        out = boot(req)
    elif action == "rule_del":
        out = {"http": Neutron(req).send("DELETE", f"/security-group-rules/{req['rule_id']}")[0]}
    elif action == "rule_add":
        body = {**ICMP_IN, "security_group_id": req["group_id"]}
        out = {"rule_id": Neutron(req).make("/security-group-rules", "security_group_rule", body)["id"]}
    elif action == "port":
        status, answer = Neutron(req).send("GET", f"/ports/{req['port_id']}")
        port = answer.get("port", {})
        out = {"http": status, "status": port.get("status"), "host": port.get("binding:host_id"),
               "vif_type": port.get("binding:vif_type"), "vif_details": port.get("binding:vif_details") or {},
               "addresses": [ip["ip_address"] for ip in port.get("fixed_ips", [])]}  # fmt: skip
    elif action == "agents":
        status, answer = Neutron(req).send("GET", "/agents")
        listed = [{"host": a.get("host"), "agent_type": a.get("agent_type"), "alive": bool(a.get("alive"))}
                  for a in answer.get("agents", [])]  # fmt: skip
        out = {"http": status, "agents": listed}
    elif action == "pair":  # a port update: one allowed address pair (the agent re-makes its anti-spoofing rules)
        body = {"port": {"allowed_address_pairs": [{"ip_address": req["ip"], "mac_address": req["mac"]}]}}
        out = {"http": Neutron(req).send("PUT", f"/ports/{req['port_id']}", body)[0]}
    elif action == "teardown":
        net = Neutron(req)
        paths = [f"/ports/{p}" for p in req.get("ports", [])]
        paths += [f"/security-groups/{req['group_id']}"] if req.get("group_id") else []
        paths += [f"/networks/{req['network_id']}"] if req.get("network_id") else []
        out = {"deleted": {path: net.send("DELETE", path)[0] for path in paths}}
    else:
        raise SystemExit(f"unknown action {action}")
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
