"""The table of OpenStack roles stacklab ships: service name -> role. A service the lab names without a role here is
*pending* in the plan (ServiceDriver.unsupported), never faked. Adding a service: its module, then one line here."""

from __future__ import annotations

from stacklab.drivers.openstack import cinder, glance, infra, keystone, neutron, nova, placement, swift
from stacklab.drivers.openstack.common import ServiceRole

ROLES: dict[str, ServiceRole] = {
    role.name: role
    for role in (
        *infra.ROLES,
        keystone.ROLE,
        glance.ROLE,
        placement.ROLE,
        neutron.ROLE,
        cinder.ROLE,
        nova.ROLE,
        swift.ROLE,
    )
}
