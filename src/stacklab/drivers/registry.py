"""Importing this module registers every driver stacklab ships (each module registers itself)."""

from __future__ import annotations

import importlib
import logging

LOG = logging.getLogger(__name__)

# Order does not matter; a module that fails to import (missing optional binding) is reported, not fatal.
DRIVER_MODULES = (
    "stacklab.drivers.nodes.bridge",
    "stacklab.drivers.nodes.sshkey",
    "stacklab.drivers.nodes.image",
    "stacklab.drivers.nodes.node",
    "stacklab.drivers.storage.iscsi.driver",
    "stacklab.drivers.storage.lvm.driver",
    "stacklab.drivers.storage.nfs.driver",
    "stacklab.drivers.storage.ceph.driver",
    "stacklab.drivers.openstack.services",
)

for _name in DRIVER_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a driver module not written yet, or a missing binding
        if exc.name == _name:
            LOG.debug("driver module %s not present", _name)
        else:
            LOG.warning("driver module %s unavailable: %s", _name, exc)
