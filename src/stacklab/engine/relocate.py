"""Relocation of a lab dir materialized from a checkpoint saved in another lab dir (a training copy's, see
checkpoint.py and copies.py): absolute paths that name the old dir, and the LXC configs' cgroup dir derived from
it, are rewritten to name the new one."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stacklab.drivers.nodes.lxc_config import cgroup_lab_dir
from stacklab.exec.atomic import write_atomic


def _path_pattern(origin: Path) -> re.Pattern[str]:
    # the dir itself, or a path under it: never a sibling that merely starts with the same characters
    return re.compile(re.escape(str(origin)) + r"""(?=[/"'\s]|$)""", re.MULTILINE)


def relocate_text(text: str, origin: Path, dest: Path) -> str:
    return _path_pattern(origin).sub(lambda _match: str(dest), text)


def relocate_json(data: Mapping[str, Any], origin: Path, dest: Path) -> dict[str, Any]:
    relocated: dict[str, Any] = json.loads(relocate_text(json.dumps(dict(data)), origin, dest))
    return relocated


def relocate_dir(lab: str, origin: Path, dest: Path, nodes: Sequence[str]) -> None:
    """Rewrite a lab dir materialized from `origin` to name `dest`: the top-level text files (state.json,
    ssh_config, inventory.json...) and each node's LXC config, whose cgroup dir is derived from the lxcpath.
    A copy's state keeps no host snapshot of its original (the copy's own leak check is engine/copies.py's)."""
    for entry in sorted(dest.iterdir()):
        if not entry.is_file() or entry.is_symlink() or entry.name in ("lock", "known_hosts"):
            continue
        try:
            text = entry.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        new = relocate_text(text, origin, dest)
        if entry.name == "state.json":
            data = json.loads(new)
            data.pop("host_before", None)
            new = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
        if new != text:
            write_atomic(entry, new, mode=entry.stat().st_mode & 0o777)
    old_cgroup = cgroup_lab_dir(lab, Path(os.path.abspath(origin / "lxc")))
    new_cgroup = cgroup_lab_dir(lab, Path(os.path.abspath(dest / "lxc")))
    for node in nodes:
        config = dest / "lxc" / node / "config"
        text = config.read_text()
        new = relocate_text(text, origin, dest).replace(f" = {old_cgroup}/", f" = {new_cgroup}/")
        if new != text:
            write_atomic(config, new, mode=0o644)
