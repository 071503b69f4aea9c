"""verify's lanes: the health suites first (infra beside openstack, then storage alone), then the Swift suites beside
the rest, each lane a pytest process of its own, their JUnit merged into one file with the lab baseline's verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stacklab.errors import VerifyError
from stacklab.suites.report import parse_junit
from stacklab.suites.schedule import is_serial, phases
from stacklab.verify import merge_junit, run_suites
from tests.unit.test_verify import fake_lab_state

AIO = ["infra", "storage", "openstack", "volumes", "attach", "replication", "evacuation", "caching", "failover",
       "swift_loss", "migration"]  # fmt: skip


def test_the_default_lab_runs_swift_beside_the_rest_after_the_health_suites() -> None:
    plan = phases(AIO)
    assert plan == [
        [("infra", ["infra"]), ("openstack", ["openstack"])],
        [("storage", ["storage"])],
        [("cinder", ["volumes", "failover"])],
        [("main", ["attach", "evacuation", "migration"]), ("swift", ["replication", "swift_loss"]),
         ("local-disk", ["caching"])],
    ]  # fmt: skip
    assert not is_serial(plan)


def test_failover_and_network_leave_the_main_lane_and_nothing_disturbs_them() -> None:
    plan = phases([*AIO, "network", "./mine.py"])
    assert plan[2] == [("cinder", ["volumes", "failover"]), ("network", ["network"])]
    # what stops or empties a compute (evacuation, migration) or makes a volume on a guest (attach) runs after them
    assert plan[3] == [("main", ["attach", "evacuation", "migration", "./mine.py"]),
                       ("swift", ["replication", "swift_loss"]), ("local-disk", ["caching"])]  # fmt: skip


@pytest.mark.parametrize(
    "names",
    [["volumes"], ["infra", "volumes", "attach"], ["replication", "swift_loss"], ["./mine.py", "infra"], []],
)
def test_what_has_no_two_lanes_at_once_stays_one_pytest_run(names: list[str]) -> None:
    assert is_serial(phases(names))
    assert [s for phase in phases(names) for _, lane in phase for s in lane] == sorted(
        names, key=lambda n: (n not in ("infra", "storage", "openstack"), names.index(n))
    )


OK_FILE = """
def test_fine():
    assert True
"""
BAD_FILE = """
def test_broken():
    assert 1 == 2, "the bytes differ"
"""


def test_lanes_run_at_once_and_report_as_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a user's file goes to the main lane, the shipped Swift suite to its own (it skips: the lab has no Swift)
    state = fake_lab_state(tmp_path / "state", "demo")
    (tmp_path / "mine.py").write_text(BAD_FILE)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VerifyError, match=r"suites failed: mine\.py \(pytest exit 1\)"):
        run_suites("demo", tmp_path / "state", ["./mine.py", "replication"])
    out = capsys.readouterr()
    assert "== lane main: mine.py" in out.out and "== lane swift: replication" in out.out
    (junit,) = (state / "verify").glob("*.xml")  # the lanes' own files are merged and gone
    cases = parse_junit(junit)
    assert {c.suite for c in cases} == {"mine.py", "replication"}
    assert [c.outcome for c in cases if c.suite == "mine.py"] == ["failed"]
    assert {c.outcome for c in cases if c.suite == "replication"} == {"skipped"}
    assert re.search(r"replication\s+0\s+0\s+\d+", out.err), out.err
    assert re.search(r"== all lanes: 1 failed, \d+ skipped in [0-9.]+s", out.out), out.out
    (tmp_path / "mine.py").write_text(OK_FILE)
    run_suites("demo", tmp_path / "state", ["./mine.py", "replication"])  # both lanes pass: no error


def test_the_merged_junit_carries_the_baseline_verdict(tmp_path: Path) -> None:
    part = tmp_path / "lane.xml"
    part.write_text('<testsuites><testsuite name="pytest"><testcase classname="test_volumes" name="test_a" '
                    'time="1"/></testsuite></testsuites>')  # fmt: skip
    merged = tmp_path / "all.xml"
    merge_junit([part], merged, "lab_baseline::the_lab_is_as_before_the_suites", ["volume v-1"])
    cases = {c.name: c for c in parse_junit(merged)}
    assert cases["test_a"].outcome == "passed"
    baseline = cases["the_lab_is_as_before_the_suites"]
    assert (baseline.suite, baseline.outcome) == ("lab_baseline", "failed")
    assert "left behind by the suites: volume v-1" in baseline.message
    merge_junit([part], merged, "lab_baseline::the_lab_is_as_before_the_suites", [])
    assert {c.name: c.outcome for c in parse_junit(merged)}["the_lab_is_as_before_the_suites"] == "passed"
    assert json.dumps([c.suite for c in parse_junit(merged)]) == '["volumes", "lab_baseline"]'
