"""Reading the host's kernel interfaces under a root (/proc, /sys, /dev): every read tolerates absence, nothing is
changed. Tests point `root` at a fake tree."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    fstype: str


class HostFiles:
    """Reads the host's kernel interfaces under `root`; every read tolerates absence."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def exists(self, absolute: str) -> bool:
        return self.path(absolute).exists()

    def is_dir(self, absolute: str) -> bool:
        return self.path(absolute).is_dir()

    def read(self, absolute: str) -> str | None:
        try:
            return self.path(absolute).read_text(errors="replace")
        except OSError:
            return None

    def lines(self, absolute: str) -> list[str]:
        text = self.read(absolute)
        return text.splitlines() if text is not None else []


def status_fields(files: HostFiles) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in files.lines("/proc/self/status"):
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def filesystems_of(files: HostFiles) -> set[str]:
    # lines look like "nodev\tconfigfs" or "\text4"
    return {line.split()[-1] for line in files.lines("/proc/filesystems") if line.split()}


def mounts_of(files: HostFiles) -> list[Mount]:
    mounts = []
    for line in files.lines("/proc/mounts"):
        parts = line.split()
        if len(parts) >= 3:
            mounts.append(Mount(parts[0], parts[1], parts[2]))
    return mounts


def misc_devices(files: HostFiles) -> set[str]:
    return {parts[1] for line in files.lines("/proc/misc") if len(parts := line.split()) >= 2}


def proc_devices(files: HostFiles) -> set[str]:
    names = set()
    for line in files.lines("/proc/devices"):
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            names.add(parts[1])
    return names


def _norm_module(name: str) -> str:
    return name.replace("-", "_")


def _module_names(lines: Iterable[str]) -> set[str]:
    names = set()
    for line in lines:
        path = line.split(":", 1)[0].strip()
        if path:
            base = path.rsplit("/", 1)[-1]
            names.add(_norm_module(base.split(".ko", 1)[0]))
    return names


class Modules:
    """Which kernel modules are loaded or built in now, and which could be loaded."""

    def __init__(self, files: HostFiles, *, is_root: bool) -> None:
        self._files = files
        release = (files.read("/proc/sys/kernel/osrelease") or "").strip()
        base = f"/lib/modules/{release}" if release else None
        self.builtin = _module_names(files.lines(f"{base}/modules.builtin")) if base else set()
        self.enabled = files.exists("/proc/modules") and is_root
        self.loadable = _module_names(files.lines(f"{base}/modules.dep")) if base and self.enabled else set()

    def present(self, name: str) -> bool:
        return self._files.is_dir(f"/sys/module/{_norm_module(name)}")

    def how(self, name: str) -> str | None:
        """Why module `name` is usable ('loaded', 'built in', 'loadable module'), or None."""
        norm = _norm_module(name)
        if self.present(norm):
            return f"module {norm} loaded"
        if norm in self.builtin:
            return f"{norm} built in"
        if norm in self.loadable:
            return f"loadable module {norm}"
        return None
