"""Where a lab's recipes and templates live: the nearest images/ and cloud-init/ above the lab file."""

from __future__ import annotations

from pathlib import Path


def find_up(start: Path, name: str) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / name
        if candidate.is_dir():
            return candidate
    return None


def find_images_dir(base_dir: Path) -> Path | None:
    return find_up(base_dir, "images")
