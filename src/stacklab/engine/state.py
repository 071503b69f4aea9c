"""Per-lab state: `.stacklab/<lab>/state.json` (atomic writes) and a lock so two runs of one lab never overlap."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from stacklab.errors import LockedError, StackLabError
from stacklab.exec.atomic import write_atomic
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


# How often a waiting run tries the lock again, and how often it says it is still waiting.
LOCK_POLL = 0.5
LOCK_NOTICE_EVERY = 30.0


def lock_holder_text(raw: str) -> str:
    """Who holds the lock, from the record its holder wrote: pid, command line and since when."""
    try:
        data = json.loads(raw)
        pid, command, since = int(data["pid"]), str(data["command"]), float(data["since"])
    except (ValueError, KeyError, TypeError):
        return f"pid {raw.strip() or 'unknown'}"  # a record of an older stacklab (bare pid) or a half-written one
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    return f"pid {pid} (`{command}`, since {stamp}, {max(0.0, time.time() - since):.0f}s ago)"


def _command_line() -> str:
    args = [os.path.basename(sys.argv[0]) if sys.argv else "stacklab", *sys.argv[1:]]
    if args[0] in ("__main__.py", "-m"):
        args[0] = "stacklab"
    return " ".join(args)


@contextlib.contextmanager
def lab_lock(
    lab_dir: Path,
    *,
    wait: float = 0.0,
    command: str | None = None,
    on_wait: Callable[[str], None] | None = None,
    hint: str = "wait for it to finish; the lock goes away when its process exits",
) -> Iterator[None]:
    """Exclusive lock on the lab, taken by `up`, `down` and `verify`, so no two of them run on one lab at once.

    With `wait` 0 a second run fails at once; otherwise it tries again until `wait` seconds have passed, telling
    `on_wait` whom it waits for. The holder writes its pid, command line and start time into the lock file so the
    refusal names them. flock, not a pid file: the lock goes away with its process, even after SIGKILL.
    """
    lab_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(lab_dir, 0o700)
    path = lab_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        next_notice = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = lock_holder_text(os.pread(fd, 4096, 0).decode(errors="replace"))
                now = time.monotonic()
                if now >= deadline:
                    waited = f" after waiting {wait:.0f}s" if wait > 0 else ""
                    raise LockedError(
                        f"lab {lab_dir.name} is locked by another stacklab run{waited}: {holder}",
                        hint=hint,
                    ) from None
                if on_wait is not None and now >= next_notice:
                    on_wait(f"lab {lab_dir.name} is locked by {holder}; waiting up to {deadline - now:.0f}s")
                    next_notice = now + LOCK_NOTICE_EVERY
                time.sleep(min(LOCK_POLL, max(0.0, deadline - now)))
        record = {"pid": os.getpid(), "command": command or _command_line(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
