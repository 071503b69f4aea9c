"""Runs on a lab node with plain python3 (no OpenStack libraries): keystone, glance, Swift and cinder over HTTP.

Usage: os_client.py SERVICE ACTION, with one JSON request on stdin (the admin password is in it, never in argv):
  glance upload   {"size"}                  create a raw image of random bytes and upload it: id, sha256, status
  glance download {"image_id"}              sha256 and length of the image's bytes
  glance cache    {}                        glance's cache listing
  glance delete   {"image_id"}              drop it from the cache and delete it
  glance file     {"path", "name", "disk_format", "container_format", "properties"}   upload a file of this node
                                            as an image with those properties: id, status
  swift put       {"container", "object", "size"}   create the container, upload random bytes: sha256, status
  swift get       {"container", "object"}   sha256 and status of the object
  swift delete    {"container", "object"}   the object, then the container
  cinder pools    {}                        the scheduler's pools with their capabilities
  cinder create   {"size_gb", "name", "volume_type"?}   create a volume, wait until available (or error): id, status,
                                            host
  cinder show     {"volume_id"}             status, host and attachments of the volume
  cinder attach   {"volume_id", "connector"}   an attachment with that connector, completed (as nova does):
                                            attachment_id, connection_info, the volume's status
  cinder detach   {"volume_id", "attachment_id"}   delete the attachment, wait until available
  cinder delete   {"volume_id"}             delete the volume, wait until it is gone
  cinder request  {"method", "path", "body"}   one call of the volume API (path after the project's endpoint,
                                            microversion 3.44): http, answer, request_id (the `failover` suite's
                                            extend, snapshots, services and user messages)
  neutron network {"cidr"}                  a network, a subnet on `cidr` and a port: segment type and VNI, the
                                            port's address; then all deleted
  nova boot       {"name", "image_id", "ram", "vcpus", "disk"}   boot without NICs on a flavor of that size (made
                                            when missing), wait until ACTIVE (or ERROR): id, status, host, fault
  nova attach     {"server_id", "volume_id"}   attach the volume, wait until cinder says in-use: device
  nova detach     {"server_id", "volume_id"}   detach it through nova (server remove volume), wait until cinder
                                            says available: http, status, attachments, seconds
  nova evacuate   {"server_id", "host"}     mark `host` forced down, evacuate the server, wait until ACTIVE
                                            elsewhere: host, status
  nova migrations {"server_id"}             the server's migrations: type, status, source and dest hosts
  nova undown     {"host"}                  clear the forced-down mark of that host's nova-compute: http, answer
  nova services   {}                        the nova-compute services: host, state, status, forced_down
  nova delete     {"server_id"}             delete the server and wait until it is gone
  nova hosts      {}                        nova's services and hypervisors, and placement's providers with their
                                            inventories (what the scheduler will choose from)
  placement claim {"vcpus", "memory_mb"}    a resource provider with that inventory: candidates for half of it,
                                            a claim of 3/4 of the VCPUs, usages, candidates again, then all deleted
  heat stack      {"length"}                a stack of a random string (OS::Heat::RandomString) handed to a value
                                            (OS::Heat::Value): status, reason, outputs, resources, the engines;
                                            then deleted: the delete's final status, seconds
  lab inventory   {}                        what the lab holds: servers, volumes, snapshots (all projects),
                                            images, projects, users, nova-compute services (each service that is
                                            in the catalog)
Every request also has "auth_url" and "password" (keystone's admin). Prints one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any


def call(
    method: str, url: str, token: str | None = None, body: bytes | None = None, headers: dict[str, str] | None = None,
    *, timeout: float = 120.0,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if token:
        request.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def json_call(token: str, headers: dict[str, str], method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """`call` with a JSON body and a JSON answer ({} when empty)."""
    status, _, answer = call(method, url, token, None if body is None else json.dumps(body).encode(), headers)
    return status, json.loads(answer) if answer.strip() else {}


def login_catalog(req: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A project-scoped admin token and the public endpoint of every service type in its catalog."""
    user = {"name": "admin", "domain": {"name": "Default"}, "password": req["password"]}
    body = {
        "auth": {
            "identity": {"methods": ["password"], "password": {"user": user}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
        }
    }
    status, headers, data = call("POST", req["auth_url"] + "/auth/tokens", body=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    if status != 201:
        raise SystemExit(f"keystone refused the admin login: HTTP {status}")
    urls = {}
    for service in json.loads(data)["token"]["catalog"]:
        public = [e["url"] for e in service["endpoints"] if e["interface"] == "public"]
        if public:
            urls[service["type"]] = public[0].rstrip("/")
    return headers["X-Subject-Token"], urls


def login(req: dict[str, Any], service_type: str) -> tuple[str, str]:
    """A project-scoped admin token and the public endpoint of `service_type` from its catalog."""
    token, urls = login_catalog(req)
    return token, urls[service_type]


def glance(action: str, req: dict[str, Any]) -> dict[str, Any]:
    token, url = login(req, "image")
    out: dict[str, Any] = {"glance": url}
    if action == "upload":
        payload = os.urandom(int(req["size"]))
        meta = {"name": "stacklab-suite", "disk_format": "raw", "container_format": "bare", "visibility": "private"}
        _, _, data = call("POST", url + "/v2/images", token, json.dumps(meta).encode(),
                          {"Content-Type": "application/json"})  # fmt: skip
        image_id = json.loads(data)["id"]
        call("PUT", f"{url}/v2/images/{image_id}/file", token, payload, {"Content-Type": "application/octet-stream"})
        _, _, data = call("GET", f"{url}/v2/images/{image_id}", token)
        out.update(image_id=image_id, sha256=hashlib.sha256(payload).hexdigest(), status=json.loads(data)["status"])
    elif action == "download":
        status, _, data = call("GET", f"{url}/v2/images/{req['image_id']}/file", token)
        out.update(http=status, sha256=hashlib.sha256(data).hexdigest(), length=len(data))
    elif action == "file":
        meta = {"name": req["name"], "disk_format": req["disk_format"], "container_format": req["container_format"],
                "visibility": "public", **req.get("properties", {})}  # fmt: skip
        _, _, data = call("POST", url + "/v2/images", token, json.dumps(meta).encode(),
                          {"Content-Type": "application/json"})  # fmt: skip
        image_id = json.loads(data)["id"]
        with open(req["path"], "rb") as handle:
            payload = handle.read()
        call("PUT", f"{url}/v2/images/{image_id}/file", token, payload, {"Content-Type": "application/octet-stream"})
        _, _, data = call("GET", f"{url}/v2/images/{image_id}", token)
        out.update(image_id=image_id, status=json.loads(data)["status"], size=len(payload))
    elif action == "cache":
        out.update(cache=json.loads(call("GET", url + "/v2/cache", token)[2]))
    elif action == "delete":
        out.update(http=[call("DELETE", f"{url}/v2/cache/{req['image_id']}", token)[0],
                         call("DELETE", f"{url}/v2/images/{req['image_id']}", token)[0]])  # fmt: skip
    return out


def swift(action: str, req: dict[str, Any]) -> dict[str, Any]:
    token, storage = login(req, "object-store")
    container, obj = f"{storage}/{req['container']}", f"{storage}/{req['container']}/{req['object']}"
    out: dict[str, Any] = {"account": storage.rsplit("/", 1)[1], "storage_url": storage}
    if action == "put":
        payload = os.urandom(int(req["size"]))
        call("PUT", container, token)
        out.update(http=call("PUT", obj, token, payload)[0], sha256=hashlib.sha256(payload).hexdigest())
    elif action == "get":
        status, _, data = call("GET", obj, token)
        out.update(http=status, sha256=hashlib.sha256(data).hexdigest(), length=len(data))
    elif action == "delete":
        out.update(http=[call("DELETE", obj, token)[0], call("DELETE", container, token)[0]])
    return out


VOLUME_API = {"Content-Type": "application/json", "OpenStack-API-Version": "volume 3.44"}
WAIT = 180.0


def volume(token: str, url: str, volume_id: str) -> tuple[int, dict[str, Any]]:
    status, _, data = call("GET", f"{url}/volumes/{volume_id}", token, headers=VOLUME_API)
    return status, (json.loads(data)["volume"] if status == 200 else {})


def wait_volume(token: str, url: str, volume_id: str, wanted: set[str], budget: float = WAIT) -> dict[str, Any]:
    """The volume once its status is in `wanted` ("gone": deleted); exits when it does not get there in time."""
    deadline = time.monotonic() + budget
    while True:
        http, vol = volume(token, url, volume_id)
        status = "gone" if http == 404 else str(vol.get("status"))
        if status in wanted:
            return vol
        if status.startswith("error") or time.monotonic() > deadline:
            raise SystemExit(f"volume {volume_id}: expected {sorted(wanted)}, saw {status} (HTTP {http})")
        time.sleep(2.0)


def cinder(action: str, req: dict[str, Any]) -> dict[str, Any]:
    token, url = login(req, "volumev3")
    out: dict[str, Any] = {"cinder": url}
    if action == "pools":
        status, _, data = call("GET", url + "/scheduler-stats/get_pools?detail=true", token, headers=VOLUME_API)
        out.update(http=status, pools=json.loads(data).get("pools", []))
    elif action == "create":
        body = {"volume": {"size": int(req["size_gb"]), "name": req.get("name", "stacklab-suite")}}
        if req.get("volume_type"):  # a backend's type (its volume_backend_name): lvm-lioadm, nfs...
            body["volume"]["volume_type"] = req["volume_type"]
        status, _, data = call("POST", url + "/volumes", token, json.dumps(body).encode(), VOLUME_API)
        if status != 202:
            raise SystemExit(f"cinder refused the volume: HTTP {status}: {data[:500]!r}")
        volume_id = json.loads(data)["volume"]["id"]
        vol = wait_volume(token, url, volume_id, {"available"}, float(req.get("wait", WAIT)))
        out.update(id=volume_id, status=vol["status"], host=vol.get("os-vol-host-attr:host"), size=vol["size"])
    elif action == "show":
        http, vol = volume(token, url, req["volume_id"])
        out.update(http=http, status=vol.get("status"), host=vol.get("os-vol-host-attr:host"),
                   attachments=vol.get("attachments", []))  # fmt: skip
    elif action == "attach":
        body = {"attachment": {"volume_uuid": req["volume_id"], "connector": req["connector"]}}
        wait = float(req.get("wait", 120.0))  # the API asks cinder-volume for the connection (a synchronous RPC)
        status, _, data = call("POST", url + "/attachments", token, json.dumps(body).encode(), VOLUME_API,
                                 timeout=wait)  # fmt: skip
        if status != 200:
            raise SystemExit(f"cinder refused the attachment: HTTP {status}: {data[:500]!r}")
        attachment = json.loads(data)["attachment"]
        complete = json.dumps({"os-complete": None}).encode()
        done, _, _ = call("POST", f"{url}/attachments/{attachment['id']}/action", token, complete, VOLUME_API)
        out.update(attachment_id=attachment["id"], connection_info=attachment.get("connection_info"),
                   complete_http=done, status=volume(token, url, req["volume_id"])[1].get("status"))  # fmt: skip
    elif action == "detach":
        status, _, _ = call("DELETE", f"{url}/attachments/{req['attachment_id']}", token, headers=VOLUME_API)
        freed = wait_volume(token, url, req["volume_id"], {"available"}, float(req.get("wait", WAIT)))
        out.update(http=status, status=freed["status"])
    elif action == "delete":
        status, _, _ = call("DELETE", f"{url}/volumes/{req['volume_id']}", token, headers=VOLUME_API)
        wait_volume(token, url, req["volume_id"], {"gone"}, float(req.get("wait", WAIT)))
        out.update(http=status, status="gone")
    elif action == "request":
        sent = None if req.get("body") is None else json.dumps(req["body"]).encode()
        status, headers, data = call(req["method"], url + req["path"], token, sent, VOLUME_API)
        ids = [v for k, v in headers.items() if k.lower() == "x-openstack-request-id"]
        out.update(http=status, answer=json.loads(data) if data.strip() else {}, request_id=ids[0] if ids else None)
    return out


def neutron(action: str, req: dict[str, Any]) -> dict[str, Any]:
    """Network, subnet and port as nova asks for them (no agents: the port stays unbound), then deleted."""
    if action != "network":
        raise SystemExit(f"unknown neutron action {action}")
    token, url = login(req, "network")
    out: dict[str, Any] = {"neutron": url}

    def send(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return json_call(token, {"Content-Type": "application/json"}, method, f"{url}/v2.0{path}", body)

    created: list[str] = []
    try:
        status, net = send("POST", "/networks", {"network": {"name": "stacklab-suite"}})
        if status != 201:
            raise SystemExit(f"neutron refused the network: HTTP {status}: {net}")
        network = net["network"]
        created.append(f"/networks/{network['id']}")
        out.update(network_type=network.get("provider:network_type"), vni=network.get("provider:segmentation_id"))
        subnet_body = {"subnet": {"network_id": network["id"], "ip_version": 4, "cidr": req["cidr"]}}
        status, sub = send("POST", "/subnets", subnet_body)
        if status != 201:
            raise SystemExit(f"neutron refused the subnet: HTTP {status}: {sub}")
        created.append(f"/subnets/{sub['subnet']['id']}")
        status, prt = send("POST", "/ports", {"port": {"network_id": network["id"], "name": "stacklab-suite"}})
        if status != 201:
            raise SystemExit(f"neutron refused the port: HTTP {status}: {prt}")
        port = prt["port"]
        created.append(f"/ports/{port['id']}")
        out.update(addresses=[ip["ip_address"] for ip in port.get("fixed_ips", [])], mac=port.get("mac_address"),
                   gateway=sub["subnet"].get("gateway_ip"), vif_type=port.get("binding:vif_type"))  # fmt: skip
    finally:
        out["deleted"] = [send("DELETE", path)[0] for path in reversed(created)]
    return out


COMPUTE_API = {"Content-Type": "application/json", "X-OpenStack-Nova-API-Version": "2.53"}


def server(token: str, url: str, server_id: str) -> tuple[int, dict[str, Any]]:
    status, _, data = call("GET", f"{url}/servers/{server_id}", token, headers=COMPUTE_API)
    return status, json.loads(data).get("server", {}) if status == 200 else {}


def wait_server(token: str, url: str, server_id: str, wanted: set[str], budget: float = 600.0) -> dict[str, Any]:
    deadline = time.monotonic() + budget
    while True:
        http, srv = server(token, url, server_id)
        status = "gone" if http == 404 else str(srv.get("status"))
        if status in wanted or status == "ERROR" or time.monotonic() > deadline:
            return {"status": status, "host": srv.get("OS-EXT-SRV-ATTR:host"), "fault": srv.get("fault")}
        time.sleep(3.0)


def flavor_id(token: str, url: str, req: dict[str, Any]) -> str:
    name = f"stacklab-{req['vcpus']}c{req['ram']}m{req['disk']}g"
    _, _, data = call("GET", f"{url}/flavors", token, headers=COMPUTE_API)
    for flavor in json.loads(data)["flavors"]:
        if flavor["name"] == name:
            return str(flavor["id"])
    body = {"flavor": {"name": name, "ram": int(req["ram"]), "vcpus": int(req["vcpus"]), "disk": int(req["disk"])}}
    status, _, data = call("POST", f"{url}/flavors", token, json.dumps(body).encode(), COMPUTE_API)
    if status != 200:
        raise SystemExit(f"nova refused the flavor: HTTP {status}: {data[:300]!r}")
    return str(json.loads(data)["flavor"]["id"])


def force_down(token: str, url: str, host: str, down: bool) -> tuple[int, Any]:
    """Set or clear the forced-down mark of `host`'s nova-compute (what a fencing agent does); HTTP status, answer."""
    _, found = json_call(token, COMPUTE_API, "GET", f"{url}/os-services?binary=nova-compute&host={host}")
    (svc,) = found["services"]
    return json_call(token, COMPUTE_API, "PUT", f"{url}/os-services/{svc['id']}", {"forced_down": down})


def compute_services(token: str, url: str) -> list[dict[str, Any]]:
    _, found = json_call(token, COMPUTE_API, "GET", f"{url}/os-services?binary=nova-compute")
    keys = ("host", "state", "status", "forced_down")
    return [{k: svc.get(k) for k in keys} for svc in found.get("services", [])]


def cinder_volume_wait(req: dict[str, Any], volume_id: str, wanted: set[str]) -> dict[str, Any]:
    """The volume as cinder shows it once its status is in `wanted` (nova changes it through cinder)."""
    token, url = login(req, "volumev3")
    return wait_volume(token, url, volume_id, wanted, float(req.get("wait", WAIT)))  # a kernel backend: longer


def nova_instances(action: str, req: dict[str, Any], token: str, url: str) -> dict[str, Any]:
    """Instances as a user drives them: boot, volume attach, evacuation, delete."""
    if action == "boot":
        body = {"server": {"name": req["name"], "imageRef": req["image_id"], "flavorRef": flavor_id(token, url, req),
                           "networks": "none"}}  # fmt: skip
        status, _, data = call("POST", f"{url}/servers", token, json.dumps(body).encode(), COMPUTE_API)
        if status != 202:
            raise SystemExit(f"nova refused the server: HTTP {status}: {data[:500]!r}")
        server_id = json.loads(data)["server"]["id"]
        return {"id": server_id, **wait_server(token, url, server_id, {"ACTIVE"})}
    if action == "attach":
        body = {"volumeAttachment": {"volumeId": req["volume_id"]}}
        status, _, data = call("POST", f"{url}/servers/{req['server_id']}/os-volume_attachments", token,
                               json.dumps(body).encode(), COMPUTE_API)  # fmt: skip
        if status != 200:
            raise SystemExit(f"nova refused the attachment: HTTP {status}: {data[:500]!r}")
        vol = cinder_volume_wait(req, req["volume_id"], {"in-use"})
        return {"device": json.loads(data)["volumeAttachment"].get("device"), "status": vol["status"]}
    if action == "detach":
        started = time.monotonic()
        status, _, data = call("DELETE", f"{url}/servers/{req['server_id']}/os-volume_attachments/{req['volume_id']}",
                               token, headers=COMPUTE_API)  # fmt: skip
        if status != 202:
            raise SystemExit(f"nova refused the detach: HTTP {status}: {data[:500]!r}")
        vol = cinder_volume_wait(req, req["volume_id"], {"available"})
        return {"http": status, "status": vol["status"], "attachments": vol.get("attachments", []),
                "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    if action == "migrations":
        headers = {**COMPUTE_API, "X-OpenStack-Nova-API-Version": "2.59"}  # filters by instance
        _, found = json_call(token, headers, "GET", f"{url}/os-migrations?instance_uuid={req['server_id']}")
        keys = ("migration_type", "status", "source_compute", "dest_compute")
        mine = [m for m in found.get("migrations", []) if m.get("instance_uuid") == req["server_id"]]
        return {"migrations": [{k: m.get(k) for k in keys} for m in mine]}
    if action == "services":
        return {"services": compute_services(token, url)}
    if action == "evacuate":
        force_down(token, url, req["host"], True)
        status, _, data = call("POST", f"{url}/servers/{req['server_id']}/action", token,
                               json.dumps({"evacuate": {}}).encode(), COMPUTE_API)  # fmt: skip
        if status != 200:
            raise SystemExit(f"nova refused the evacuation: HTTP {status}: {data[:500]!r}")
        # the server stays ACTIVE on the dead host until the conductor has scheduled the rebuild (seconds, more on
        # a busy lab): wait for it to be ACTIVE somewhere else (or ERROR), not for the first ACTIVE
        deadline = time.monotonic() + 600.0
        while True:
            seen = wait_server(token, url, req["server_id"], {"ACTIVE"})
            if seen["host"] != req["host"] or seen["status"] != "ACTIVE" or time.monotonic() > deadline:
                return seen
            time.sleep(3.0)
    if action == "undown":
        http, answer = force_down(token, url, req["host"], False)
        return {"http": http, "answer": answer}
    if action == "delete":
        started = time.monotonic()
        call("DELETE", f"{url}/servers/{req['server_id']}", token, headers=COMPUTE_API)
        gone = wait_server(token, url, req["server_id"], {"gone"}, budget=300.0)
        return {**gone, "seconds": round(time.monotonic() - started, 1)}
    raise SystemExit(f"unknown nova action {action}")


def nova(action: str, req: dict[str, Any]) -> dict[str, Any]:
    token, url = login(req, "compute")
    if action != "hosts":
        return {"nova": url, **nova_instances(action, req, token, url)}
    _, placement_url = login(req, "placement")
    _, _, data = call("GET", url + "/os-services", token, headers=COMPUTE_API)
    services = [{k: s.get(k) for k in ("binary", "host", "state", "status")} for s in json.loads(data)["services"]]
    _, _, data = call("GET", url + "/os-hypervisors/detail", token, headers=COMPUTE_API)
    hypervisors = [{k: h.get(k) for k in ("hypervisor_hostname", "hypervisor_type", "host_ip", "state", "vcpus")}
                   for h in json.loads(data)["hypervisors"]]  # fmt: skip
    providers = {}
    _, _, data = call("GET", placement_url + "/resource_providers", token, headers=PLACEMENT_API)
    for rp in json.loads(data)["resource_providers"]:
        _, _, inv = call("GET", f"{placement_url}/resource_providers/{rp['uuid']}/inventories", token,
                         headers=PLACEMENT_API)  # fmt: skip
        providers[rp["name"]] = {k: v["total"] for k, v in json.loads(inv)["inventories"].items()}
    return {"nova": url, "services": services, "hypervisors": hypervisors, "providers": providers}


PLACEMENT_API = {"Content-Type": "application/json", "OpenStack-API-Version": "placement 1.31"}


def placement(action: str, req: dict[str, Any]) -> dict[str, Any]:
    """As nova's scheduler and computes use it: inventory, candidates, an allocation, usages (microversion 1.31)."""
    if action != "claim":
        raise SystemExit(f"unknown placement action {action}")
    token, url = login(req, "placement")
    vcpus, memory = int(req["vcpus"]), int(req["memory_mb"])
    out: dict[str, Any] = {"placement": url}

    def send(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return json_call(token, PLACEMENT_API, method, url + path, body)

    name = f"stacklab-suite-{os.getpid()}-{int(time.time())}"
    status, rp = send("POST", "/resource_providers", {"name": name})
    if status != 200:
        raise SystemExit(f"placement refused the resource provider: HTTP {status}: {rp}")
    rp_id, consumer = rp["uuid"], str(uuid.uuid4())
    try:
        inventories = {"VCPU": {"total": vcpus}, "MEMORY_MB": {"total": memory}}
        body = {"resource_provider_generation": rp["generation"], "inventories": inventories}
        out["inventory_http"] = send("PUT", f"/resource_providers/{rp_id}/inventories", body)[0]

        def candidates(cpu: int) -> list[str]:
            query = f"/allocation_candidates?resources=VCPU:{cpu},MEMORY_MB:{memory // 2}&in_tree={rp_id}"
            return sorted(send("GET", query)[1].get("provider_summaries", {}))

        out["before"] = candidates(vcpus // 2)
        claim = {
            "allocations": {rp_id: {"resources": {"VCPU": vcpus * 3 // 4, "MEMORY_MB": memory // 2}}},
            "project_id": str(uuid.uuid4()),
            "user_id": str(uuid.uuid4()),
            "consumer_generation": None,
        }
        out["claim_http"] = send("PUT", f"/allocations/{consumer}", claim)[0]
        out["usages"] = send("GET", f"/resource_providers/{rp_id}/usages")[1].get("usages", {})
        out["after"] = candidates(vcpus // 2)
        out["release_http"] = send("DELETE", f"/allocations/{consumer}")[0]
        out["released"] = candidates(vcpus // 2)
    finally:
        send("DELETE", f"/allocations/{consumer}")
        out["delete_http"] = send("DELETE", f"/resource_providers/{rp_id}")[0]
    out["rp"] = rp_id
    return out


def inventory(req: dict[str, Any]) -> dict[str, Any]:
    """Names and ids of what the lab holds now, for the before/after comparison of `verify` (lab_baseline); only
    the services in the catalog are asked."""
    token, urls = login_catalog(req)
    plain = {"Content-Type": "application/json"}
    wanted = {
        "projects": ("identity", "/projects", plain),
        "users": ("identity", "/users", plain),
        "servers": ("compute", "/servers?all_tenants=1", COMPUTE_API),
        "images": ("image", "/v2/images?limit=1000", plain),
        "volumes": ("volumev3", "/volumes?all_tenants=1", VOLUME_API),
        "snapshots": ("volumev3", "/snapshots?all_tenants=1", VOLUME_API),
    }
    out: dict[str, Any] = {}
    for key, (service_type, path, headers) in wanted.items():
        if service_type not in urls:
            continue
        status, found = json_call(token, headers, "GET", urls[service_type] + path)
        if status != 200:
            raise SystemExit(f"GET {path} from {service_type}: HTTP {status}: {str(found)[:300]}")
        out[key] = sorted(f"{item.get('name') or ''} {item['id']}".strip() for item in found.get(key, []))
    if "compute" in urls:
        out["computes"] = compute_services(token, urls["compute"])
    return out


HEAT_TEMPLATE = {
    "heat_template_version": "2018-08-31",
    "parameters": {"length": {"type": "number", "default": 16}},
    "resources": {
        "word": {"type": "OS::Heat::RandomString", "properties": {"length": {"get_param": "length"}}},
        "kept": {"type": "OS::Heat::Value", "properties": {"value": {"get_attr": ["word", "value"]}}},
    },
    "outputs": {"word": {"value": {"get_attr": ["word", "value"]}}, "kept": {"value": {"get_attr": ["kept", "value"]}}},
}


def wait_stack(token: str, url: str, path: str, done: set[str], budget: float = WAIT) -> tuple[int, dict[str, Any]]:
    """The stack once its status is in `done` or it is gone (404), or as it is when the budget ends."""
    deadline = time.monotonic() + budget
    while True:
        status, body = json_call(token, {}, "GET", f"{url}/stacks/{path}")
        stack = body.get("stack") or {}
        if status == 404 or stack.get("stack_status") in done or time.monotonic() > deadline:
            return status, stack
        time.sleep(2.0)


def heat(action: str, req: dict[str, Any]) -> dict[str, Any]:
    """One stack through heat-api and heat-engine (over the queue), its outputs, then deleted."""
    if action != "stack":
        raise SystemExit(f"unknown heat action {action}")
    token, url = login(req, "orchestration")
    name = f"stacklab-suite-{uuid.uuid4().hex[:8]}"
    body = {"stack_name": name, "template": HEAT_TEMPLATE, "parameters": {"length": req["length"]}, "timeout_mins": 5}
    status, made = json_call(token, {"Content-Type": "application/json"}, "POST", f"{url}/stacks", body)
    if status != 201:
        raise SystemExit(f"heat refused the stack: HTTP {status}: {made}")
    path = f"{name}/{made['stack']['id']}"
    out: dict[str, Any] = {"name": name}
    try:
        _, stack = wait_stack(token, url, path, {"CREATE_COMPLETE", "CREATE_FAILED"})
        out.update(status=stack.get("stack_status"), reason=stack.get("stack_status_reason"))
        out["outputs"] = {o["output_key"]: o.get("output_value") for o in stack.get("outputs") or []}
        _, listed = json_call(token, {}, "GET", f"{url}/stacks/{path}/resources")
        out["resources"] = {r["resource_name"]: [r["resource_type"], r["resource_status"]]
                            for r in listed.get("resources", [])}  # fmt: skip
        _, engines = json_call(token, {}, "GET", f"{url}/services")
        out["engines"] = [[e.get("host"), e.get("binary"), e.get("status")] for e in engines.get("services", [])]
    finally:
        start = time.monotonic()
        json_call(token, {}, "DELETE", f"{url}/stacks/{path}")
        gone, after = wait_stack(token, url, path, {"DELETE_COMPLETE", "DELETE_FAILED"})
        out.update(deleted=after.get("stack_status") or gone, delete_seconds=round(time.monotonic() - start, 1))
    return out


def lab(action: str, req: dict[str, Any]) -> dict[str, Any]:
    if action != "inventory":
        raise SystemExit(f"unknown lab action {action}")
    return inventory(req)


def main() -> None:
    service, action = sys.argv[1], sys.argv[2]
    req = json.loads(sys.stdin.read())
    roles = {
        "glance": glance,
        "swift": swift,
        "cinder": cinder,
        "neutron": neutron,
        "nova": nova,
        "placement": placement,
        "heat": heat,
        "lab": lab,
    }
    out = roles[service](action, req)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
