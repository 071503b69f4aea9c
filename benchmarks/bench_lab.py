"""A benchmark's own copy of a shipped lab: a unique name and /24s (model.starter.unique_copy), a work directory with
links to the checkout's images/ and cloud-init/ (which the lab file resolves against), and its own state dir."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stacklab.model.starter import unique_copy

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchLab:
    name: str
    work: Path  # removed by the benchmark when done
    file: Path
    state: Path
    env: dict[str, str]  # the environment every stacklab command of this lab runs with


def bench_lab(template: str, prefix: str) -> BenchLab:
    name, text = unique_copy((ROOT / "labs" / f"{template}.yml").read_text(), prefix, first_octet=150)
    work = Path(tempfile.mkdtemp(prefix=f"stacklab-{prefix}-"))
    for linked in ("images", "cloud-init"):
        (work / linked).symlink_to(ROOT / linked)
    lab_file = work / f"{name}.yml"
    lab_file.write_text(text)
    state = work / "state"
    return BenchLab(name, work, lab_file, state, {**os.environ, "STACKLAB_STATE": str(state)})
