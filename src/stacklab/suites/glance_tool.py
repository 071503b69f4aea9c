"""Runs on a lab node with plain python3 (no OpenStack libraries): talks to keystone and glance over HTTP.

Usage: glance_tool.py ACTION, with one JSON request on stdin: {"auth_url", "password", "image_id"?, "size"?}.
Actions: `upload` (create a raw image of `size` random bytes and upload it: id and sha256), `download` (sha256 and
length of the image's bytes), `cache` (glance's cache listing), `delete` (drop it from the cache and delete it).
Prints one JSON line. The admin password comes on stdin, never in argv.
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
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, dict(response.headers), response.read()


def login(req: dict[str, Any]) -> tuple[str, str]:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": req["password"]}},
            },
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
        }
    }
    _, headers, data = call(
        "POST",
        req["auth_url"] + "/auth/tokens",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    catalog = json.loads(data)["token"]["catalog"]
    image = next(s for s in catalog if s["type"] == "image")
    url = next(e["url"] for e in image["endpoints"] if e["interface"] == "public")
    return headers["X-Subject-Token"], url.rstrip("/")


def main() -> None:
    action = sys.argv[1]
    req = json.loads(sys.stdin.read())
    token, glance = login(req)
    out: dict[str, Any] = {"glance": glance}
    if action == "upload":
        payload = os.urandom(int(req["size"]))
        meta = {"name": "stacklab-suite", "disk_format": "raw", "container_format": "bare", "visibility": "private"}
        _, _, data = call(
            "POST", glance + "/v2/images", token, json.dumps(meta).encode(), {"Content-Type": "application/json"}
        )
        image_id = json.loads(data)["id"]
        call("PUT", f"{glance}/v2/images/{image_id}/file", token, payload, {"Content-Type": "application/octet-stream"})
        _, _, data = call("GET", f"{glance}/v2/images/{image_id}", token)
        out.update(image_id=image_id, sha256=hashlib.sha256(payload).hexdigest(), status=json.loads(data)["status"])
    elif action == "download":
        status, _, data = call("GET", f"{glance}/v2/images/{req['image_id']}/file", token)
        out.update(http=status, sha256=hashlib.sha256(data).hexdigest(), length=len(data))
    elif action == "cache":
        _, _, data = call("GET", glance + "/v2/cache", token)
        out.update(cache=json.loads(data))
    elif action == "delete":
        for url in (f"{glance}/v2/cache/{req['image_id']}", f"{glance}/v2/images/{req['image_id']}"):
            try:
                call("DELETE", url, token)
            except urllib.error.HTTPError as exc:
                out.setdefault("errors", []).append(f"DELETE {url}: {exc.code}")
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
