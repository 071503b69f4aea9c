"""Importing this module registers every driver stacklab ships (each module registers itself)."""

from __future__ import annotations

import importlib
import logging

LOG = logging.getLogger(__name__)

# Order does not matter; a module that fails to import (missing optional binding) is reported, not fatal.
DRIVER_MODULES = (
    "stacklab.drivers.bridge",
    "stacklab.drivers.sshkey",
    "stacklab.drivers.image",
    "stacklab.drivers.node",
    "stacklab.drivers.iscsi",
    "stacklab.drivers.lvm",
    "stacklab.drivers.nfs",
    "stacklab.drivers.ceph",
    "stacklab.drivers.services",
)

for _name in DRIVER_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a driver module not written yet, or a missing binding
        if exc.name == _name:
            LOG.debug("driver module %s not present", _name)
        else:
            LOG.warning("driver module %s unavailable: %s", _name, exc)
