"""Golden-file comparison; STACKLAB_REGEN_GOLDEN=1 rewrites the files instead of comparing, on a developer's machine
only: under CI (the `CI` variable set, which tox passes through with STACKLAB_*) a regeneration request fails the
test, so an exported STACKLAB_REGEN_GOLDEN can never turn every golden test green there."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
REGEN_VAR = "STACKLAB_REGEN_GOLDEN"


def regenerating(environ: Mapping[str, str] | None = None) -> bool:
    """Whether golden files are to be rewritten; an AssertionError when that is asked for under CI."""
    env = os.environ if environ is None else environ
    if env.get(REGEN_VAR) != "1":
        return False
    assert not env.get("CI"), (
        f"{REGEN_VAR}=1 under CI (CI={env.get('CI')!r}): golden files are compared there, never rewritten; "
        "regenerate on a developer machine and commit the reviewed diff"
    )
    return True


def check_golden(relative: str, actual: str) -> None:
    path = GOLDEN / relative
    if regenerating():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"golden file {path} missing; run with {REGEN_VAR}=1 to create it"
    expected = path.read_text()
    assert actual == expected, f"output differs from {path} (regenerate with {REGEN_VAR}=1 if intended)"
