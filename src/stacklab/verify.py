"""`stacklab verify`: write the lab context, run the shipped testinfra suites with pytest, report JUnit XML."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from stacklab.engine.atomic import write_atomic
from stacklab.engine.state import StateStore
from stacklab.errors import StackLabError, VerifyError
from stacklab.exec.runner import LocalRunner
from stacklab.suites.context import ENV, build_context

SUITES_DIR = Path(__file__).resolve().parent / "suites"
# Generous: a suite may wait for Ceph to heal or a node to come back.
SUITE_TIMEOUT = 3600.0
# Compares the lab's cloud before and after the suites: leftovers or a compute that does not serve fail the run.
BASELINE_PLUGIN = "stacklab.suites.lab_baseline"


def available_suites() -> list[str]:
    return sorted(p.stem.removeprefix("test_") for p in SUITES_DIR.glob("test_*.py"))


def run_suites(lab: str, state_root: Path, wanted: list[str], *, keyword: str | None = None) -> None:
    state = StateStore(state_root, lab)
    if not state.exists:
        raise StackLabError(f"lab {lab} is not up (no state under {state_root})", hint="run `stacklab up` first")
    if not (state.dir / "ssh_config").exists():
        raise StackLabError(f"lab {lab} has no nodes to verify", hint="suites run over SSH against lab nodes")
    shipped = available_suites()
    runnable = [s for s in wanted if s in shipped]
    missing = [s for s in wanted if s not in shipped]
    for suite in missing:
        click.echo(f"not run: suite {suite} is not shipped by this stacklab yet", err=True)
    if not runnable:
        raise VerifyError("no requested suite can run", hint=f"available suites: {', '.join(shipped)}")
    out_dir = state.dir / "verify"
    context_file = out_dir / "context.json"
    write_atomic(context_file, json.dumps(build_context(lab, state.dir, state.resources), indent=2), mode=0o600)
    junit = out_dir / f"{time.strftime('%Y%m%dT%H%M%S')}.xml"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        BASELINE_PLUGIN,
        "-o",
        "addopts=",
        "-rfE",
        "-q",
        "--rootdir",
        str(SUITES_DIR),
        f"--junitxml={junit}",
        *(["-k", keyword] if keyword else []),
        *(str(SUITES_DIR / f"test_{s}.py") for s in runnable),
    ]
    result = LocalRunner().run(argv, timeout=SUITE_TIMEOUT, check=False, env={ENV: str(context_file)})
    click.echo(result.stdout, nl=False)
    if result.stderr.strip():
        click.echo(result.stderr, err=True, nl=False)
    click.echo(f"report: {junit}", err=True)
    if result.returncode != 0:
        raise VerifyError(f"suites failed: {', '.join(runnable)} (pytest exit {result.returncode})")
    if missing:
        click.echo(f"passed: {', '.join(runnable)}; not run: {', '.join(missing)}", err=True)
