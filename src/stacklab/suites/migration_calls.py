"""Runs on a lab node with plain python3, beside os_client.py (its keystone login and HTTP helpers): nova's live
migration and maintenance calls, made as `nova live-migration` and `nova host-evacuate-live` make them.

Usage: migration_calls.py ACTION, with one JSON request on stdin ("auth_url" and "password" as for os_client.py):
  live-migrate   {"server_id", "host"?}    os-migrateLive (block_migration auto; the scheduler picks the host
                                           unless one is given), then wait until nova's migration record ends:
                                           http, answer, migration (status, source, dest), server (status, host),
                                           seconds
  service        {"host", "status", "reason"?}   set the host's nova-compute `enabled` or `disabled` (with the
                                           reason): http, service (status, state, disabled_reason)
  host-servers   {"host"}                  the ids of the servers nova places on `host` (all projects)
  evacuate-live  {"host"}                  live-migrate every server off `host` (host-evacuate-live: one request
                                           per server, then wait for each): servers, one live-migrate answer each
Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

if __package__:  # imported from the package (unit tests, mypy)
    from stacklab.suites import os_client as api
else:  # on the node, uploaded beside os_client.py
    import os_client as api  # type: ignore[import-not-found,no-redef]

# 2.59: migrations carry their id and can be filtered by instance; 2.25: block_migration "auto"
API = {**api.COMPUTE_API, "X-OpenStack-Nova-API-Version": "2.59"}
ENDED = {"completed", "error", "failed", "cancelled"}
BUDGET = 600.0


def migrations(token: str, url: str, server_id: str) -> list[dict[str, Any]]:
    """The server's live migrations, oldest first."""
    _, found = api.json_call(token, API, "GET", f"{url}/os-migrations?instance_uuid={server_id}")
    mine = [m for m in found.get("migrations", []) if m.get("migration_type") == "live-migration"]
    return sorted(mine, key=lambda m: int(m["id"]))


def request_live_migration(token: str, url: str, server_id: str, host: str | None) -> dict[str, Any]:
    """POST os-migrateLive; the answer and the ids of the server's migrations that existed before."""
    before = [int(m["id"]) for m in migrations(token, url, server_id)]
    body = {"os-migrateLive": {"host": host, "block_migration": "auto"}}
    status, answer = api.json_call(token, API, "POST", f"{url}/servers/{server_id}/action", body)
    return {"server_id": server_id, "http": status, "answer": answer, "before": before, "started": time.monotonic()}


def wait_live_migration(token: str, url: str, asked: dict[str, Any]) -> dict[str, Any]:
    """Wait until the migration nova made for `asked` ends (or none appears / it outlasts the budget)."""
    server_id, out = asked["server_id"], {k: asked[k] for k in ("server_id", "http", "answer")}
    migration: dict[str, Any] = {}
    while asked["http"] == 202 and time.monotonic() < asked["started"] + BUDGET:
        new = [m for m in migrations(token, url, server_id) if int(m["id"]) not in asked["before"]]
        migration = new[-1] if new else {}
        if migration.get("status") in ENDED:
            break
        time.sleep(1.0)
    keys = ("id", "status", "source_compute", "dest_compute", "created_at", "updated_at")
    out["migration"] = {k: migration.get(k) for k in keys}
    _, server = api.server(token, url, server_id)
    out["server"] = {"status": server.get("status"), "host": server.get("OS-EXT-SRV-ATTR:host"),
                     "task_state": server.get("OS-EXT-STS:task_state"), "fault": server.get("fault")}  # fmt: skip
    out["seconds"] = round(time.monotonic() - asked["started"], 1)
    return out


def host_servers(token: str, url: str, host: str) -> list[str]:
    _, found = api.json_call(token, API, "GET", f"{url}/servers/detail?all_tenants=1&host={host}")
    return sorted(str(s["id"]) for s in found.get("servers", []))


def service(token: str, url: str, req: dict[str, Any]) -> dict[str, Any]:
    _, found = api.json_call(token, API, "GET", f"{url}/os-services?binary=nova-compute&host={req['host']}")
    (svc,) = found["services"]
    body: dict[str, Any] = {"status": req["status"]}
    if req["status"] == "disabled" and req.get("reason"):
        body["disabled_reason"] = req["reason"]
    status, answer = api.json_call(token, API, "PUT", f"{url}/os-services/{svc['id']}", body)
    keys = ("host", "status", "state", "disabled_reason", "forced_down")
    return {"http": status, "service": {k: answer.get("service", {}).get(k) for k in keys}}


def run(action: str, req: dict[str, Any]) -> dict[str, Any]:
    token, url = api.login(req, "compute")
    if action == "live-migrate":
        return wait_live_migration(token, url, request_live_migration(token, url, req["server_id"], req.get("host")))
    if action == "service":
        return service(token, url, req)
    if action == "host-servers":
        return {"servers": host_servers(token, url, req["host"])}
    if action == "evacuate-live":
        servers = host_servers(token, url, req["host"])
        asked = [request_live_migration(token, url, server_id, None) for server_id in servers]
        return {"servers": servers, "migrations": [wait_live_migration(token, url, a) for a in asked]}
    raise SystemExit(f"unknown action {action}")


def main() -> None:
    out = run(sys.argv[1], json.loads(sys.stdin.read()))
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
