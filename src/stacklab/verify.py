"""`stacklab verify`: under the lab's lock, write the lab context, run the testinfra suites (shipped ones by name,
a user's files by path) with pytest over the lab's ssh_config, then print a summary table per suite and write
JUnit XML and a self-contained HTML report with the evidence each test recorded."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from stacklab.engine.state import StateStore, lab_lock
from stacklab.errors import EXIT_INVALID_LAB, StackLabError, VerifyError
from stacklab.exec.atomic import write_atomic
from stacklab.exec.runner import LocalRunner
from stacklab.model.checks import shipped_suites
from stacklab.suites.context import ENV, build_context

SUITES_DIR = Path(__file__).resolve().parent / "suites"
# Generous: a suite may wait for Ceph to heal or a node to come back.
SUITE_TIMEOUT = 3600.0
# The fixtures (lab, host per node, hosts, runners, evidence) as a plugin: a user's file outside SUITES_DIR gets them.
FIXTURES_PLUGIN = "stacklab.suites.lab_fixtures"
# Compares the lab's cloud before and after the suites: leftovers or a compute that does not serve fail the run.
BASELINE_PLUGIN = "stacklab.suites.lab_baseline"


class SuiteError(StackLabError):
    """A requested suite does not exist (unknown name or missing file): bad input, nothing was run."""

    exit_code = EXIT_INVALID_LAB


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path


def available_suites() -> list[str]:
    return shipped_suites()


def resolve_suites(wanted: list[str], cwd: Path | None = None) -> list[Suite]:
    """Shipped suites by name; anything with a slash or ending in .py is a user's pytest/testinfra file."""
    shipped = available_suites()
    found: list[Suite] = []
    for item in wanted:
        if "/" in item or item.endswith(".py"):
            path = ((cwd or Path.cwd()) / item).resolve()
            if not path.is_file():
                raise SuiteError(f"suite file {item} not found", hint="pass a path to a pytest/testinfra .py file")
            found.append(Suite(path.name, path))
        elif item in shipped:
            found.append(Suite(item, SUITES_DIR / f"test_{item}.py"))
        else:
            raise SuiteError(
                f"suite {item!r} is not shipped by this stacklab",
                hint=f"shipped suites: {', '.join(shipped)}; run a file of your own with --suite ./file.py",
            )
    return list({s.path: s for s in found}.values())  # a suite asked for twice runs once


def pytest_argv(
    suites: list[Suite], *, nodes: list[str], ssh_config: Path, junit: Path, keyword: str | None
) -> list[str]:
    """pytest over the suites; testinfra's `--hosts`/`--ssh-config` make its `host` fixture one per lab node."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        FIXTURES_PLUGIN,
        "-p",
        BASELINE_PLUGIN,
        "-o",
        "addopts=",
        "-o",
        "junit_family=xunit1",  # keeps each test's properties (the evidence) and file
        "-rfE",
        "-q",
        "--rootdir",
        str(SUITES_DIR),
        f"--hosts={','.join(f'ssh://{n}' for n in nodes)}",
        f"--ssh-config={ssh_config}",
        f"--junitxml={junit}",
        *(["-k", keyword] if keyword else []),
        *(str(s.path) for s in suites),
    ]


def run_suites(lab: str, state_root: Path, wanted: list[str], *, keyword: str | None = None, wait: float = 0.0) -> None:
    state = StateStore(state_root, lab)
    if not state.exists:
        raise StackLabError(f"lab {lab} is not up (no state under {state_root})", hint="run `stacklab up` first")
    ssh_config = state.dir / "ssh_config"
    if not ssh_config.exists():
        raise StackLabError(f"lab {lab} has no nodes to verify", hint="suites run over SSH against lab nodes")
    suites = resolve_suites(wanted)
    # verify, up and down of one lab exclude each other: a suite that kills a compute must not meet an `up`
    # re-creating it, nor a second verify counting on that compute.
    hint = "wait for it to finish, or pass --wait SECONDS; the lock goes away when its process exits"
    with lab_lock(state.dir, wait=wait, on_wait=lambda message: click.echo(message, err=True), hint=hint):
        state = StateStore(state_root, lab)  # re-read: an `up` we waited for may have changed the lab
        _run(lab, state, suites, keyword)


def _run(lab: str, state: StateStore, suites: list[Suite], keyword: str | None) -> None:
    from stacklab.suites.report import parse_junit, render_html, render_table, summarize

    out_dir = state.dir / "verify"
    declared = state.meta("lab")  # the lab as `up` stored it; a state that never finished an up holds its name only
    context = build_context(lab, state.dir, state.resources, declared if isinstance(declared, dict) else None)
    context_file = out_dir / "context.json"
    write_atomic(context_file, json.dumps(context, indent=2), mode=0o600)
    started = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
    junit, report = out_dir / f"{stamp}.xml", out_dir / f"{stamp}.html"
    argv = pytest_argv(
        suites, nodes=sorted(context["nodes"]), ssh_config=state.dir / "ssh_config", junit=junit, keyword=keyword
    )
    result = LocalRunner().run(argv, timeout=SUITE_TIMEOUT, check=False, env={ENV: str(context_file)})
    click.echo(result.stdout, nl=False)
    if result.stderr.strip():
        click.echo(result.stderr, err=True, nl=False)
    names = ", ".join(s.name for s in suites)
    if not junit.exists():
        raise VerifyError(f"suites {names} did not run (pytest exit {result.returncode}, no JUnit report)")
    cases = parse_junit(junit)
    command = "stacklab verify " + lab + "".join(f" --suite {s.name}" for s in suites)
    write_atomic(report, render_html(lab, cases, started=started, command=command), mode=0o600)
    rows = summarize(cases)
    click.echo(render_table(rows), err=True)
    click.echo(f"report: {report}\njunit: {junit}", err=True)
    if result.returncode != 0:
        # name the suites with a failed test, not every suite of the run (all of them only when none is to blame)
        failed = ", ".join(r.suite for r in rows if r.failed) or names
        raise VerifyError(f"suites failed: {failed} (pytest exit {result.returncode})")
    if not cases:
        raise VerifyError(f"suites {names} collected no test", hint="check -k and the files' test_ functions")
