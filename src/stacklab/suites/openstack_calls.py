"""Shared by the OpenStack suites: the services' outputs, the admin credentials, and os_client.py on a node."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pytest

from stacklab.exec.node_files import write_node_file
from stacklab.exec.runner import Runner
from stacklab.suites.context import LabContext
from stacklab.suites.storage_paths import read_secret

OS_CLIENT = "/var/tmp/stacklab-suite/os_client.py"


def service(lab: LabContext, name: str) -> Mapping[str, Any]:
    """The outputs of the lab's service `name`; the test skips when the lab has none."""
    outputs = lab.outputs.get(f"service/{name}")
    if not outputs:
        pytest.skip(f"the lab has no {name} service")
    return outputs


def admin_auth(lab: LabContext) -> dict[str, str]:
    keystone = service(lab, "keystone")
    return {"auth_url": str(keystone["auth_url"]), "password": read_secret(lab, str(keystone["admin_secret"]))}


def os_client(runner: Runner, service_name: str, action: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """Run os_client.py SERVICE ACTION on the node (uploaded when missing or changed), the request on stdin."""
    write_node_file(runner, OS_CLIENT, resources.files("stacklab.suites").joinpath("os_client.py").read_text())
    result = runner.run(["python3", OS_CLIENT, service_name, action], input=json.dumps(request), timeout=300,
                        check=False)  # fmt: skip
    assert result.ok, f"os_client {service_name} {action} failed: {result.stderr[-1500:]}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))
