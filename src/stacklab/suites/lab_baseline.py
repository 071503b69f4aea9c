"""pytest plugin of `stacklab verify` (`-p stacklab.suites.lab_baseline`): the suites leave the lab as they found it.

At the start of the session it takes an inventory of the lab's cloud (os_client.py `lab inventory` on the keystone
node: servers, volumes, snapshots, images, projects and users, and nova's compute services); at the end it takes
another. Anything in the second that was not in the first is left behind by a suite, and every compute must be up,
enabled and not forced down; otherwise the session fails (pytest exit 1) with a line naming each leftover. A lab
without keystone has nothing to compare: the plugin stays silent.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, Literal

import pytest

from stacklab.suites.context import ENV, LabContext

LISTS = ("servers", "volumes", "snapshots", "images", "projects", "users")
KEY = pytest.StashKey[dict[str, Any]]()


def inventory(lab: LabContext) -> dict[str, Any] | None:
    """The lab's cloud as os_client.py lists it; None when the lab has no keystone."""
    keystone = lab.outputs.get("service/keystone")
    if not keystone:
        return None
    from stacklab.suites.openstack_calls import admin_auth, os_client

    runner = lab.runner(str(keystone["node"]))
    try:
        return os_client(runner, "lab", "inventory", admin_auth(lab))
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()


def leftovers(before: Mapping[str, Any], after: Mapping[str, Any], computes: list[str]) -> list[str]:
    """What the session left behind, one line each: new objects of every kind, and computes that do not serve."""
    found = []
    for kind in LISTS:
        new = sorted(set(after.get(kind, [])) - set(before.get(kind, [])))
        found += [f"{kind[:-1]} {item}" for item in new]
    services = {str(s["host"]): s for s in after.get("computes", [])}
    for host in computes:
        svc = services.get(host)
        if svc is None or (svc.get("state"), svc.get("status"), svc.get("forced_down")) != ("up", "enabled", False):
            found.append(f"compute {host}: {svc or 'no nova-compute service'} (expected up, enabled, not forced down)")
    return found


CLEAN = "lab baseline: the lab is as before the suites (no leftovers, every compute serves)"


def left_since(lab: LabContext, before: Mapping[str, Any]) -> list[str]:
    """What the suites left behind since `before` (the inventory taken when they started), one line each."""
    computes = [str(c) for c in (lab.outputs.get("service/nova") or {}).get("computes", [])]
    return leftovers(before, inventory(lab) or {}, computes)


def left_lines(left: list[str]) -> list[str]:
    """The verdict's lines for a test report: one per leftover."""
    return [f"left behind by the suites: {item}" for item in left]


def pytest_sessionstart(session: pytest.Session) -> None:
    if ENV not in os.environ:  # not run by `stacklab verify`
        return
    lab = LabContext.load()
    before = inventory(lab)
    if before is not None:
        session.stash[KEY] = {"lab": lab, "before": before}


NODEID = "lab_baseline::the_lab_is_as_before_the_suites"


def log_verdict(session: pytest.Session, left: list[str]) -> None:
    """Report the baseline check as one test of its own (setup, call, teardown), so that pytest's summary counts it,
    the JUnit XML (and with it verify's table and HTML report) holds it, and the session fails when it fails."""
    outcome: Literal["passed", "failed"] = "failed" if left else "passed"
    longrepr = "\n".join(left_lines(left)) if left else None
    location = ("lab_baseline", None, "the lab is as before the suites")
    phases: tuple[tuple[Literal["setup", "call", "teardown"], Literal["passed", "failed"]], ...] = (
        ("setup", "passed"),
        ("call", outcome),
        ("teardown", "passed"),
    )
    for when, result in phases:
        report = pytest.TestReport(NODEID, location, {}, result, longrepr if when == "call" else None, when)
        session.config.hook.pytest_runtest_logreport(report=report)
    if left and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# tryfirst: before the JUnit plugin writes its file in its own sessionfinish, so the verdict is in it
@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    taken = session.stash.get(KEY, None)
    if taken is None:
        return
    left = left_since(taken["lab"], taken["before"])
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        if left:
            for line in left_lines(left):
                reporter.write_line(f"lab baseline: {line}", red=True)
        else:
            reporter.write_line(CLEAN)
    else:
        sys.stderr.write("".join(f"lab baseline: {line}\n" for line in left_lines(left)))
    log_verdict(session, left)
