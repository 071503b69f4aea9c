"""The NFS backend table: implementation name -> backend (NFS-Ganesha, knfsd)."""

from __future__ import annotations

from stacklab.drivers.storage.nfs.ganesha import GaneshaBackend
from stacklab.drivers.storage.nfs.knfsd import KnfsdBackend
from stacklab.drivers.storage.nfs.types import NfsServerBackend
from stacklab.errors import PlanError


def backend_for(implementation: str) -> NfsServerBackend:
    if implementation == "ganesha":
        return GaneshaBackend()
    if implementation == "knfsd":
        return KnfsdBackend()
    raise PlanError(f"unknown NFS server implementation {implementation!r}", hint="use `ganesha` or `knfsd`")
