"""`stacklab verify`: under the lab's lock, write the lab context, run the testinfra suites (shipped ones by name,
a user's files by path) with pytest over the lab's ssh_config, then print a summary table per suite and write
JUnit XML and a self-contained HTML report with the evidence each test recorded."""

from __future__ import annotations

import concurrent.futures as cf
import json
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from stacklab.engine.state import StateStore, lab_lock
from stacklab.errors import EXIT_INVALID_LAB, StackLabError, VerifyError
from stacklab.exec.atomic import write_atomic
from stacklab.exec.runner import CommandResult, LocalRunner
from stacklab.model.checks import shipped_suites
from stacklab.suites.context import ENV, build_context
from stacklab.suites.report import Case, parse_junit
from stacklab.suites.schedule import Lane, is_serial, phases

SUITES_DIR = Path(__file__).resolve().parent / "suites"
# A lane's wall-clock guard, not the hang detector (every test has pytest-timeout's bound, and the tempest module
# its run's): generous, because a lane may hold several suites waiting for Ceph to heal or a node to come back, and
# tempest's full run (`STACKLAB_TEMPEST_SUBSET=full`, test_tempest.SUBSETS) is allowed 4 hours of its own.
SUITE_TIMEOUT = 5 * 3600.0
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
    suites: list[Suite],
    *,
    nodes: list[str],
    ssh_config: Path,
    junit: Path,
    keyword: str | None,
    baseline: bool = True,
) -> list[str]:
    """pytest over the suites; testinfra's `--hosts`/`--ssh-config` make its `host` fixture one per lab node.
    Without `baseline`, the caller compares the lab before and after (lanes: no single pytest sees it whole)."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        FIXTURES_PLUGIN,
        *(["-p", BASELINE_PLUGIN] if baseline else []),
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
    names = ", ".join(s.name for s in suites)
    by_key = {_lane_key(s): s for s in suites}
    plan = phases(list(by_key))
    if is_serial(plan):  # one pytest process, the lab baseline inside it
        argv = pytest_argv(
            suites, nodes=sorted(context["nodes"]), ssh_config=state.dir / "ssh_config", junit=junit, keyword=keyword
        )
        result = LocalRunner().run(argv, timeout=SUITE_TIMEOUT, check=False, env={ENV: str(context_file)})
        _echo_lane(result)
        returncode = result.returncode
    else:
        returncode = run_lanes(plan, by_key, context=context, context_file=context_file,
                               ssh_config=state.dir / "ssh_config", junit=junit, keyword=keyword)  # fmt: skip
    if not junit.exists():
        raise VerifyError(f"suites {names} did not run (pytest exit {returncode}, no JUnit report)")
    cases = parse_junit(junit)
    command = "stacklab verify " + lab + "".join(f" --suite {s.name}" for s in suites)
    write_atomic(report, render_html(lab, cases, started=started, command=command), mode=0o600)
    rows = summarize(cases)
    click.echo(render_table(rows), err=True)
    click.echo(f"report: {report}\njunit: {junit}", err=True)
    if returncode != 0:
        # name the suites with a failed test, not every suite of the run (all of them only when none is to blame)
        failed = ", ".join(r.suite for r in rows if r.failed) or names
        raise VerifyError(f"suites failed: {failed} (pytest exit {returncode})")
    if not cases:
        raise VerifyError(f"suites {names} collected no test", hint="check -k and the files' test_ functions")


def _lane_key(suite: Suite) -> str:
    """A shipped suite by its name (schedule.py places it); a user's file by its path (the main lane)."""
    return suite.name if suite.path.parent == SUITES_DIR else str(suite.path)


def _echo_lane(result: CommandResult, title: str = "") -> None:
    if title:
        click.echo(f"== {title}")
    click.echo(result.stdout, nl=False)
    if result.stderr.strip():
        click.echo(result.stderr, err=True, nl=False)


def run_lanes(
    plan: list[list[Lane]],
    by_key: dict[str, Suite],
    *,
    context: dict[str, Any],
    context_file: Path,
    ssh_config: Path,
    junit: Path,
    keyword: str | None,
) -> int:
    """Each phase's lanes at once (a pytest process each), phases in turn; the lab baseline around them all; every
    lane's JUnit merged into `junit` with the baseline's verdict. The worst pytest exit status is returned."""
    from stacklab.suites.context import LabContext
    from stacklab.suites.lab_baseline import CLEAN, NODEID, inventory, left_lines, left_since

    lab = LabContext.from_dict(context)
    started = time.time()
    before = inventory(lab)
    lane_files: list[Path] = []
    codes: list[int] = []

    def run(index: int, lane: Lane) -> tuple[Lane, CommandResult]:
        name, keys = lane
        lane_junit = junit.with_name(f"{junit.stem}-lane{index}-{name}.xml")
        lane_files.append(lane_junit)
        argv = pytest_argv([by_key[k] for k in keys], nodes=sorted(context["nodes"]), ssh_config=ssh_config,
                           junit=lane_junit, keyword=keyword, baseline=False)  # fmt: skip
        return lane, LocalRunner().run(argv, timeout=SUITE_TIMEOUT, check=False, env={ENV: str(context_file)})

    index = 0
    for phase in plan:
        with cf.ThreadPoolExecutor(len(phase)) as pool:
            jobs = []
            for lane in phase:
                index += 1
                jobs.append(pool.submit(run, index, lane))
            for job in jobs:  # in lane order, each once it is done
                (name, keys), result = job.result()
                _echo_lane(result, f"lane {name}: {', '.join(by_key[k].name for k in keys)}")
                codes.append(result.returncode)
    # pytest's 5 (nothing collected in a lane, e.g. with -k) only counts when no lane ran a test
    failed = [c for c in codes if c not in (0, 5)]
    returncode = max(failed) if failed else (0 if 0 in codes else 5)
    left: list[str] = []
    if before is not None:
        left = left_since(lab, before)
        for line in left_lines(left):
            click.echo(f"lab baseline: {line}", err=True)
        if not left:
            click.echo(CLEAN)
        elif returncode in (0, 5):
            returncode = 1
    merge_junit([f for f in sorted(lane_files) if f.exists()], junit, NODEID if before is not None else None, left)
    for lane_file in lane_files:
        lane_file.unlink(missing_ok=True)
    if junit.exists():  # one pytest-style total for the whole run, as a single pytest process ends with
        click.echo(f"== all lanes: {lane_totals(parse_junit(junit))} in {time.time() - started:.2f}s")
    return returncode


def lane_totals(cases: list[Case]) -> str:
    """pytest's words for a run's outcome: `31 passed`, `2 failed, 29 passed, 3 skipped` (zero counts left out)."""
    counts = {outcome: sum(1 for c in cases if c.outcome == outcome) for outcome in ("failed", "passed", "skipped")}
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n) or "no tests ran"


def merge_junit(parts: list[Path], junit: Path, baseline: str | None, left: list[str]) -> None:
    """One JUnit file of every lane's test suites, and the lab baseline as one test case of its own."""
    from stacklab.suites.lab_baseline import left_lines

    root = ET.Element("testsuites")
    for part in parts:
        found = ET.parse(part).getroot()
        root.extend([found] if found.tag == "testsuite" else list(found))
    if baseline is not None:
        suite = ET.SubElement(root, "testsuite", name="lab_baseline", tests="1", failures=str(int(bool(left))))
        module, _, name = baseline.partition("::")
        case = ET.SubElement(suite, "testcase", classname=module, name=name, time="0")
        if left:
            failure = ET.SubElement(case, "failure", message=f"left behind by the suites: {'; '.join(left)}")
            failure.text = "\n".join(left_lines(left))
    if not parts and baseline is None:
        return
    write_atomic(junit, ET.tostring(root, encoding="unicode"), mode=0o600)
