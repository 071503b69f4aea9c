"""The iSCSI backend table: implementation name -> backend (tgt, LIO)."""

from __future__ import annotations

from stacklab.drivers.storage.iscsi.lio import LioBackend
from stacklab.drivers.storage.iscsi.tgt import TgtBackend
from stacklab.drivers.storage.iscsi.types import IscsiTargetBackend
from stacklab.errors import PlanError


def backend_for(implementation: str) -> IscsiTargetBackend:
    if implementation == "tgt":
        return TgtBackend()
    if implementation == "lio":
        return LioBackend()
    raise PlanError(f"unknown iSCSI target implementation {implementation!r}", hint="use `tgt` or `lio`")
