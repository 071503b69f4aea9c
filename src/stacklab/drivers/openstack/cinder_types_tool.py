"""Runs on the controller (python3 with keystoneauth1 from the OpenStack image): one cinder volume type per backend,
idempotently. Reads one JSON request on stdin (the admin password never in argv):

    {"auth_url": ..., "admin_password": ..., "region": "RegionOne",
     "types": {"lvm-lioadm": "lvm-lioadm", "nfs": "nfs"}}      # type name -> volume_backend_name

Each type is made when missing and its `volume_backend_name` extra spec set (the scheduler's filter then sends a
volume of that type to that backend only); `{"remove": true, ...}` deletes the listed types instead. Prints one
JSON line with what changed. stacklab uploads and runs this file; it is not imported by stacklab itself.
"""

from __future__ import annotations

import json
import sys
from typing import Any

HEADERS = {"OpenStack-API-Version": "volume 3.44"}


def _session(request: dict[str, Any]) -> Any:
    from keystoneauth1 import session  # type: ignore[import-not-found, unused-ignore]
    from keystoneauth1.identity import v3  # type: ignore[import-not-found, unused-ignore]

    auth = v3.Password(auth_url=request["auth_url"], username="admin", password=request["admin_password"],
                       project_name="admin", user_domain_name="Default", project_domain_name="Default")  # fmt: skip
    return session.Session(auth=auth, timeout=60)


def _call(sess: Any, request: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    endpoint = {"service_type": "volumev3", "interface": "public", "region_name": request.get("region")}
    response = sess.request(path, method, endpoint_filter=endpoint, json=body, headers=HEADERS, raise_exc=False)
    if response.status_code >= 300:
        raise SystemExit(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json() if response.text else {}


def main() -> None:
    request = json.loads(sys.stdin.read())
    sess = _session(request)
    existing = {t["name"]: t for t in _call(sess, request, "GET", "/types?is_public=None")["volume_types"]}
    changed: list[str] = []
    for name, backend in request["types"].items():
        found = existing.get(name)
        if request.get("remove"):
            if found is not None:
                _call(sess, request, "DELETE", f"/types/{found['id']}")
                changed.append(f"deleted {name}")
            continue
        if found is None:
            found = _call(sess, request, "POST", "/types", {"volume_type": {"name": name, "os-volume-type-access:"
                          "is_public": True}})["volume_type"]  # fmt: skip
            changed.append(f"created {name}")
        if (found.get("extra_specs") or {}).get("volume_backend_name") != backend:
            body = {"extra_specs": {"volume_backend_name": backend}}
            _call(sess, request, "POST", f"/types/{found['id']}/extra_specs", body)
            changed.append(f"{name}: volume_backend_name={backend}")
    sys.stdout.write(json.dumps({"changed": changed}) + "\n")


if __name__ == "__main__":
    main()
