"""Per-lab state: `.stacklab/<lab>/state.json` (atomic writes) and a lock so two runs of one lab never overlap."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stacklab.engine.atomic import write_atomic
from stacklab.errors import LockedError, StackLabError
from stacklab.plan.resource import Resource

STATE_VERSION = 1


class StateStore:
    """The record of what a lab created: spec hash, spec, deps and outputs of every applied resource.

    Written after every successful step, so a run that dies mid-way leaves a state `up` resumes from and
    `down` cleans up from. Thread-safe: apply steps finish on several threads.
    """

    def __init__(self, root: Path, lab: str) -> None:
        self.dir = root / lab
        self.path = self.dir / "state.json"
        self.lab = lab
        self._mutex = threading.RLock()
        self._data: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"version": STATE_VERSION, "lab": self.lab, "resources": {}}
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise StackLabError(f"state file {self.path} is corrupt: {exc}", hint="restore it from backup") from None
        if data.get("version") != STATE_VERSION:
            raise StackLabError(f"state file {self.path} has version {data.get('version')}, expected {STATE_VERSION}")
        return data

    @property
    def exists(self) -> bool:
        return self.path.exists()

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        with self._mutex:
            return {k: dict(v) for k, v in self._data["resources"].items()}

    def get(self, resource_id: str) -> dict[str, Any] | None:
        with self._mutex:
            entry = self._data["resources"].get(resource_id)
            return dict(entry) if entry is not None else None

    def outputs(self) -> dict[str, Mapping[str, Any]]:
        with self._mutex:
            return {k: v.get("outputs", {}) for k, v in self._data["resources"].items()}

    def meta(self, key: str) -> Any:
        with self._mutex:
            return self._data.get(key)

    def set_meta(self, key: str, value: Any) -> None:
        with self._mutex:
            self._data[key] = value
            self._save()

    def record(self, resource: Resource, outputs: Mapping[str, Any]) -> None:
        with self._mutex:
            self._data["resources"][resource.id] = {
                "kind": resource.kind,
                "name": resource.name,
                "hash": resource.hash,
                "spec": dict(resource.spec),
                "deps": list(resource.deps),
                "outputs": dict(outputs),
                "applied_at": time.time(),
            }
            self._save()

    def forget(self, resource_id: str) -> None:
        with self._mutex:
            self._data["resources"].pop(resource_id, None)
            self._save()

    def _save(self) -> None:
        self._data["updated_at"] = time.time()
        write_atomic(self.path, json.dumps(self._data, indent=2, sort_keys=True, default=str) + "\n", mode=0o600)

    def remove(self) -> None:
        """Delete the state file (after `down` removed everything it names)."""
        with self._mutex:
            self.path.unlink(missing_ok=True)
            self._data = {"version": STATE_VERSION, "lab": self.lab, "resources": {}}


@contextlib.contextmanager
def lab_lock(lab_dir: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on the lab; a second `up`/`down` of the same lab fails at once."""
    lab_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(lab_dir, 0o700)
    path = lab_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise LockedError(
                f"lab {lab_dir.name} is locked by another stacklab run (pid {holder})",
                hint="wait for it to finish; the lock is released when that process exits",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
