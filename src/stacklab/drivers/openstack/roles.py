"""The table of OpenStack roles stacklab ships: service name -> role, keyed off the model's service table
(model/services.py: the names a lab may list and what each needs), in its order. A service the lab names without
a role here is *pending* in the plan (ServiceDriver.unsupported), never faked; a role for a name the model does
not know is a mistake (tests/unit/test_services.py holds the two equal). Adding a service: its module, its role
in SHIPPED, and one row in model/services.py."""

from __future__ import annotations

from stacklab.drivers.openstack import cinder, glance, heat, infra, keystone, neutron, nova, placement, swift
from stacklab.drivers.openstack.common import ServiceRole
from stacklab.model.services import SERVICE_NAMES

SHIPPED: tuple[ServiceRole, ...] = (
    *infra.ROLES,
    keystone.ROLE,
    glance.ROLE,
    placement.ROLE,
    neutron.ROLE,
    cinder.ROLE,
    nova.ROLE,
    swift.ROLE,
    heat.ROLE,
)
_BY_NAME = {role.name: role for role in SHIPPED}
ROLES: dict[str, ServiceRole] = {name: _BY_NAME[name] for name in SERVICE_NAMES if name in _BY_NAME}
