"""Runs on the controller (python3 with keystoneauth1 and keystoneclient from the OpenStack image): registers an
OpenStack service in keystone, idempotently. Reads one JSON request on stdin (passwords never in argv):

    {"auth_url": ..., "admin_password": ..., "region": "RegionOne",
     "user": "glance", "password": ..., "project": "service",
     "service": {"name": "glance", "type": "image", "description": "..."},
     "endpoints": {"public": URL, "internal": URL, "admin": URL}}

Makes (or updates) the `service` project, the service user with its password and the roles `roles` (default: admin
and service) on that project, the catalog service and its three endpoints in the region; `{"remove": true, ...}`
deletes the endpoints, the service and the user instead. `{"ensure_roles": [...]}` only makes those roles. The
`service` role is what marks a token as a service's: cinder (since CVE-2023-2088) lets only a request that carries
nova's service token, of a user with that role, delete an in-use attachment; keystone's bootstrap does not make it.
Prints one JSON line saying what changed. `{"get": {"service_type": T, "path": P}}` (with auth_url and
admin_password) GETs P from the public endpoint of T as the admin instead and prints the body.
stacklab uploads and runs this file; it is not imported by stacklab itself.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _client(request: dict[str, Any]) -> Any:
    from keystoneauth1 import session  # type: ignore[import-not-found, unused-ignore]
    from keystoneauth1.identity import v3  # type: ignore[import-not-found, unused-ignore]
    from keystoneclient.v3 import client  # type: ignore[import-not-found, unused-ignore]

    auth = v3.Password(
        auth_url=request["auth_url"],
        username="admin",
        password=request["admin_password"],
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return client.Client(session=session.Session(auth=auth, timeout=30))


def _one(items: list[Any], what: str) -> Any:
    if len(items) > 1:
        raise SystemExit(f"more than one {what}: {[i.id for i in items]}")
    return items[0] if items else None


def ensure_role(ks: Any, name: str, changed: list[str]) -> Any:
    """The role `name`, made when missing (another registration running beside this one may make it first)."""
    role = _one(ks.roles.list(name=name), f"role {name}")
    if role is not None:
        return role
    from keystoneauth1 import exceptions  # type: ignore[import-not-found, unused-ignore]

    try:
        role = ks.roles.create(name)
        changed.append(f"role {name}")
    except exceptions.Conflict:
        role = _one(ks.roles.list(name=name), f"role {name}")
    return role


def register(ks: Any, request: dict[str, Any]) -> list[str]:
    changed: list[str] = []
    domain = "default"
    project = _one(ks.projects.list(name=request["project"], domain=domain), "project")
    if project is None:
        from keystoneauth1 import exceptions  # type: ignore[import-not-found, unused-ignore]

        try:
            project = ks.projects.create(request["project"], domain, description="OpenStack service users")
            changed.append(f"project {request['project']}")
        except exceptions.Conflict:  # another service's registration, running beside this one, made it first
            project = _one(ks.projects.list(name=request["project"], domain=domain), "project")
    user = _one(ks.users.list(name=request["user"], domain=domain), "user")
    if user is None:
        user = ks.users.create(request["user"], domain=domain, password=request["password"], default_project=project)
        changed.append(f"user {request['user']}")
    else:
        ks.users.update(user, password=request["password"])  # the lab's password, whatever it was
    for name in request.get("roles", ("admin", "service")):
        role = ensure_role(ks, name, changed)
        if not ks.role_assignments.list(user=user, project=project, role=role):
            ks.roles.grant(role, user=user, project=project)
            changed.append(f"{name} role for {request['user']} on {request['project']}")
    spec = request["service"]
    service = _one(ks.services.list(name=spec["name"], type=spec["type"]), f"service {spec['name']}")
    if service is None:
        service = ks.services.create(spec["name"], type=spec["type"], description=spec.get("description", ""))
        changed.append(f"service {spec['name']}")
    existing = {e.interface: e for e in ks.endpoints.list(service=service, region=request["region"])}
    for interface, url in sorted(request["endpoints"].items()):
        endpoint = existing.get(interface)
        if endpoint is None:
            ks.endpoints.create(service, url, interface=interface, region=request["region"])
            changed.append(f"{interface} endpoint")
        elif endpoint.url != url:
            ks.endpoints.update(endpoint, url=url)
            changed.append(f"{interface} endpoint url")
    return changed


def remove(ks: Any, request: dict[str, Any]) -> list[str]:
    changed: list[str] = []
    spec = request["service"]
    for service in ks.services.list(name=spec["name"], type=spec["type"]):
        for endpoint in ks.endpoints.list(service=service):
            ks.endpoints.delete(endpoint)
        ks.services.delete(service)
        changed.append(f"service {spec['name']}")
    for user in ks.users.list(name=request["user"], domain="default"):
        ks.users.delete(user)
        changed.append(f"user {request['user']}")
    return changed


def get(ks: Any, request: dict[str, Any]) -> str:
    spec = request["get"]
    endpoint = {"service_type": spec["service_type"], "interface": "public", "region_name": request.get("region")}
    response = ks.session.get(spec["path"], endpoint_filter=endpoint, raise_exc=False)
    if response.status_code != 200:
        raise SystemExit(f"GET {spec['path']} from {spec['service_type']}: HTTP {response.status_code}")
    return str(response.text)


def main() -> None:
    request = json.loads(sys.stdin.read())
    ks = _client(request)
    if "get" in request:
        sys.stdout.write(json.dumps({"body": get(ks, request)}) + "\n")
        return
    if "ensure_roles" in request:
        changed: list[str] = []
        for name in request["ensure_roles"]:
            ensure_role(ks, name, changed)
    else:
        changed = remove(ks, request) if request.get("remove") else register(ks, request)
    sys.stdout.write(json.dumps({"changed": changed}) + "\n")


if __name__ == "__main__":
    main()
