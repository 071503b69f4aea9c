"""Per-lab secrets (passwords, CHAP, cephx keys): generated once, stored under the lab's state dir with mode 0600."""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path

from stacklab.exec.atomic import write_atomic

_ALPHABET = string.ascii_letters + string.digits


def _secret_path(state_dir: Path, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad secret name {name!r}")
    return state_dir / "secrets" / name


def read_secret(state_dir: Path, name: str) -> str | None:
    """The lab's secret `name`, or None when it was never stored."""
    path = _secret_path(state_dir, name)
    return path.read_text().strip() if path.exists() else None


def get_or_create_secret(state_dir: Path, name: str, *, length: int = 24) -> str:
    """Return the lab's secret `name`, creating it on first use. Stable across `up` runs of the lab."""
    stored = read_secret(state_dir, name)
    if stored is not None:
        return stored
    path = _secret_path(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    value = "".join(secrets.choice(_ALPHABET) for _ in range(length))
    write_atomic(path, value + "\n", mode=0o600)
    return value


def store_secret(state_dir: Path, name: str, value: str) -> Path:
    """Store a secret produced elsewhere (e.g. a cephx key made by ceph-authtool)."""
    path = _secret_path(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_atomic(path, value.rstrip("\n") + "\n", mode=0o600)
    return path
