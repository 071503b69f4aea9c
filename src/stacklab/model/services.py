"""The OpenStack services a lab may name, and what each needs running beside it: one frozen table, the bottom of
the service stack.

The model sits below the drivers and must not import them, so the table lives here and everything above keys
off it: the schema's `ServiceName` (lab.py), the needs check (checks.py), the resources' dependencies
(plan/expand.py) and the driver's role table (drivers/openstack/roles.py, whose unit test insists that every
service here has a role and every role a row here). Adding a service: its driver module and one row here.
The order is the order the schema lists them in (pydantic's "Input should be ..." message and `stacklab schema`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

# name -> the services it needs (Debian Zed packages, as on our CI host)
SERVICE_NEEDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "mariadb": (),
        "rabbitmq": (),
        "memcached": (),
        "keystone": ("mariadb", "memcached"),
        "glance": ("keystone",),
        "placement": ("keystone", "mariadb"),
        "neutron": ("keystone", "mariadb", "rabbitmq"),
        "nova": ("keystone", "glance", "placement", "neutron", "mariadb", "rabbitmq"),
        "cinder": ("keystone", "mariadb", "rabbitmq"),
        "swift": ("keystone",),
        "heat": ("keystone", "mariadb", "rabbitmq"),
    }
)
SERVICE_NAMES: tuple[str, ...] = tuple(SERVICE_NEEDS)

# A need that is only reached at run time (through keystone's catalog) does not order `up`: nova's computes,
# databases and cells are built without glance answering (an instance boot asks glance, `up` does not), so
# nova's ~2 minutes run beside glance's instead of after them. Every need is still required by the checks.
NOT_BUILD_ORDER: Mapping[str, frozenset[str]] = MappingProxyType({"nova": frozenset({"glance"})})


def build_after(service: str) -> tuple[str, ...]:
    """The services `up` finishes before it builds `service` (its needs minus the run-time-only ones)."""
    return tuple(n for n in SERVICE_NEEDS.get(service, ()) if n not in NOT_BUILD_ORDER.get(service, frozenset()))


if TYPE_CHECKING:
    # mypy cannot read a Literal built from data; to the type checker a service name is a str, to pydantic (which
    # validates the lab file) it is one of the table's names.
    ServiceName = str
else:
    ServiceName = Literal[SERVICE_NAMES]
