"""Runs on a lab node with plain python3 (no OpenStack libraries): keystone, glance and Swift over HTTP.

Usage: os_client.py SERVICE ACTION, with one JSON request on stdin (the admin password is in it, never in argv):
  glance upload   {"size"}                  create a raw image of random bytes and upload it: id, sha256, status
  glance download {"image_id"}              sha256 and length of the image's bytes
  glance cache    {}                        glance's cache listing
  glance delete   {"image_id"}              drop it from the cache and delete it
  swift put       {"container", "object", "size"}   create the container, upload random bytes: sha256, status
  swift get       {"container", "object"}   sha256 and status of the object
  swift delete    {"container", "object"}   the object, then the container
Every request also has "auth_url" and "password" (keystone's admin). Prints one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any


def call(
    method: str, url: str, token: str | None = None, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if token:
        request.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def login(req: dict[str, Any], service_type: str) -> tuple[str, str]:
    """A project-scoped admin token and the public endpoint of `service_type` from its catalog."""
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
    catalog = json.loads(data)["token"]["catalog"]
    service = next(s for s in catalog if s["type"] == service_type)
    url = next(e["url"] for e in service["endpoints"] if e["interface"] == "public")
    return headers["X-Subject-Token"], url.rstrip("/")


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


def main() -> None:
    service, action = sys.argv[1], sys.argv[2]
    req = json.loads(sys.stdin.read())
    out = {"glance": glance, "swift": swift}[service](action, req)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
