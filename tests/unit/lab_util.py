"""Shared by the unit tests that write a small OpenStack lab inline: its YAML head and the finder of one resource.

The head is the text those labs had each spelled out (name, the mgmt and storage networks on 10.250.0.0/24 and
10.251.0.0/24, the openstack-zed image `os`); `os_lab` keeps the text byte for byte, so the line:column of an
error a test expects is where it was.
"""

from __future__ import annotations

from collections.abc import Mapping

from stacklab.model.lab import Lab
from stacklab.plan.expand import USERSPACE_CHOICES, expand
from stacklab.plan.resource import Resource

OS_LAB_HEAD = """networks:
  mgmt: {bridge: br-mgmt, cidr: 10.250.0.0/24}
  storage: {bridge: br-storage, cidr: 10.251.0.0/24}
images:
  os: {recipe: openstack-zed}
"""


def os_lab(name: str, rest: str) -> str:
    """A lab's YAML: a blank first line, `name: NAME`, OS_LAB_HEAD, then `rest` (nodes:, storage:, openstack:...)."""
    return f"\nname: {name}\n{OS_LAB_HEAD}{rest}"


def service_resource(lab: Lab, service: str, choices: Mapping[str, str] = USERSPACE_CHOICES) -> Resource:
    """The `service/SERVICE` resource of the lab's expanded plan under the host's `choices`."""
    return next(r for r in expand(lab, choices) if r.id == f"service/{service}")
