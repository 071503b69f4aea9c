"""Runs on a lab node with plain python3: talks to keystone and the Swift proxy over HTTP.

Usage: swift_tool.py ACTION, with one JSON request on stdin: {"auth_url", "password", "container", "object", "size"?}.
Actions: `put` (create the container, upload `size` random bytes: sha256, the account and the HTTP status),
`get` (sha256 and status of the object), `delete` (the object and the container). Prints one JSON line.
The admin password comes on stdin, never in argv.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any


def call(method: str, url: str, token: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"X-Auth-Token": token})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


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
    request = urllib.request.Request(
        req["auth_url"] + "/auth/tokens",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        token = response.headers["X-Subject-Token"]
        catalog = json.loads(response.read())["token"]["catalog"]
    swift = next(s for s in catalog if s["type"] == "object-store")
    return token, next(e["url"] for e in swift["endpoints"] if e["interface"] == "public").rstrip("/")


def main() -> None:
    action = sys.argv[1]
    req = json.loads(sys.stdin.read())
    token, storage = login(req)
    container, obj = f"{storage}/{req['container']}", f"{storage}/{req['container']}/{req['object']}"
    out: dict[str, Any] = {"account": storage.rsplit("/", 1)[1], "storage_url": storage}
    if action == "put":
        payload = os.urandom(int(req["size"]))
        call("PUT", container, token)
        status, _ = call("PUT", obj, token, payload)
        out.update(http=status, sha256=hashlib.sha256(payload).hexdigest())
    elif action == "get":
        status, data = call("GET", obj, token)
        out.update(http=status, sha256=hashlib.sha256(data).hexdigest(), length=len(data))
    elif action == "delete":
        out.update(http=[call("DELETE", obj, token)[0], call("DELETE", container, token)[0]])
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
