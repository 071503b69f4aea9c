"""Runs on a lab node with plain python3, beside os_client.py (whose login and calls it uses): the nova and glance
calls of suite `caching` that os_client.py has no action for.

Usage: caching_client.py ACTION, one JSON request on stdin (with "auth_url" and "password"), one JSON line out:
  boot    {"name", "image_id", "ram", "vcpus", "disk", "availability_zone", "host"}   boot on that host of that
          zone (compute API 2.74: the scheduler still checks it), wait until ACTIVE or ERROR: id, status, host,
          fault, seconds
  reboot  {"server_id"}                    hard reboot (the domain is defined and started again from its disk
          files), wait until ACTIVE with no task: http, status, seconds
  rebuild {"server_id", "image_id"}        ask nova to rebuild from that image: http and nova's answer (and, when
          nova takes it, the server once ACTIVE again)
  image   {"image_id"}                     glance's answer for the image: http, status, size
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

try:
    from stacklab.suites.os_client import COMPUTE_API, call, flavor_id, login, server
except ImportError:  # on a lab node: os_client.py sits beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from os_client import COMPUTE_API, call, flavor_id, login, server  # type: ignore[import-not-found,no-redef]

HOST_API = {**COMPUTE_API, "X-OpenStack-Nova-API-Version": "2.74"}  # `host` in a boot request


def settled(token: str, url: str, server_id: str, budget: float = 600.0) -> dict[str, Any]:
    """The server once it has no task and is ACTIVE (or ERROR, or the budget is spent)."""
    deadline = time.monotonic() + budget
    while True:
        http, srv = server(token, url, server_id)
        status, task = str(srv.get("status")), srv.get("OS-EXT-STS:task_state")
        if (status == "ACTIVE" and task is None) or status == "ERROR" or time.monotonic() > deadline:
            return {
                "status": status,
                "task": task,
                "host": srv.get("OS-EXT-SRV-ATTR:host"),
                "fault": srv.get("fault"),
                "http": http,
            }
        time.sleep(2.0)


def nova(action: str, req: dict[str, Any]) -> dict[str, Any]:
    token, url = login(req, "compute")
    started = time.monotonic()
    if action == "boot":
        body = {
            "server": {
                "name": req["name"],
                "imageRef": req["image_id"],
                "flavorRef": flavor_id(token, url, req),
                "networks": "none",
                "availability_zone": req["availability_zone"],
                "host": req["host"],
            }
        }
        status, _, data = call("POST", f"{url}/servers", token, json.dumps(body).encode(), HOST_API)
        if status != 202:
            raise SystemExit(f"nova refused the server: HTTP {status}: {data[:500]!r}")
        server_id = json.loads(data)["server"]["id"]
        return {"id": server_id, **settled(token, url, server_id), "seconds": round(time.monotonic() - started, 1)}
    if action == "reboot":
        status, _, data = call(
            "POST",
            f"{url}/servers/{req['server_id']}/action",
            token,
            json.dumps({"reboot": {"type": "HARD"}}).encode(),
            COMPUTE_API,
        )
        if status != 202:
            raise SystemExit(f"nova refused the hard reboot: HTTP {status}: {data[:500]!r}")
        time.sleep(2.0)  # the task is set by the API before it answers; give the compute a moment to take it
        return {**settled(token, url, req["server_id"]), "seconds": round(time.monotonic() - started, 1)}
    if action == "rebuild":
        status, _, data = call(
            "POST",
            f"{url}/servers/{req['server_id']}/action",
            token,
            json.dumps({"rebuild": {"imageRef": req["image_id"]}}).encode(),
            COMPUTE_API,
        )
        out: dict[str, Any] = {"http": status, "answer": data[:500].decode(errors="replace")}
        if status == 202:
            time.sleep(2.0)
            out.update(server=settled(token, url, req["server_id"]), seconds=round(time.monotonic() - started, 1))
        return out
    raise SystemExit(f"unknown action {action}")


def main() -> None:
    action = sys.argv[1]
    req = json.loads(sys.stdin.read())
    if action == "image":
        token, url = login(req, "image")
        status, _, data = call("GET", f"{url}/v2/images/{req['image_id']}", token)
        shown = json.loads(data) if status == 200 else {}
        out = {"http": status, "status": shown.get("status"), "size": shown.get("size")}
    else:
        out = nova(action, req)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
