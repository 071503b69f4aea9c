"""Golden-file comparison; STACKLAB_REGEN_GOLDEN=1 rewrites the files instead of comparing."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"


def check_golden(relative: str, actual: str) -> None:
    path = GOLDEN / relative
    if os.environ.get("STACKLAB_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"golden file {path} missing; run with STACKLAB_REGEN_GOLDEN=1 to create it"
    expected = path.read_text()
    assert actual == expected, f"output differs from {path} (regenerate with STACKLAB_REGEN_GOLDEN=1 if intended)"
