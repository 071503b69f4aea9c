"""`stacklab verify` without a lab: which suites run (shipped names, a user's file, unknown names refused at
`validate` and at `verify`), the summary table and the self-contained HTML report made from pytest's JUnit XML,
and the storage suite's iSCSI login-refusal matcher on outputs recorded from libiscsi through QEMU."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from stacklab.cli import main
from stacklab.errors import VerifyError
from stacklab.exec.runner import CommandResult
from stacklab.model.checks import shipped_suites
from stacklab.suites.report import parse_junit, render_html, render_table, summarize
from stacklab.suites.storage_paths import ACL_REFUSALS, CHAP_REFUSALS, assert_login_refused, iscsi_login_status
from stacklab.verify import SuiteError, resolve_suites, run_suites

ROOT = Path(__file__).resolve().parents[2]

# Recorded on the storage lab (tgt 1.0.85, libiscsi 1.19 through QEMU 7.2's qemu-io) with `read 0 4096` against
# lun1: the lab's CHAP secret, a wrong one, none, a CHAP user the target does not know, an initiator IQN outside
# the ACL (with the right secret) and a portal port nothing listens on.
_PREFIX = "qemu-io: can't open: iSCSI: Failed to connect to LUN : "
RECORDED = {
    "right_chap": (0, "read 4096/4096 bytes at offset 0\n4 KiB, 1 ops; 00.00 sec (16.077 MiB/sec)\n", ""),
    "wrong_chap": (1, "", _PREFIX + "Failed to log in to target. Status: Authentication failure(513)\n"),
    "no_chap": (1, "", _PREFIX + "Failed to log in to target. Status: Authentication failure(513)\n"),
    "wrong_user": (1, "", _PREFIX + "Failed to log in to target. Status: Authentication failure(513)\n"),
    "unknown_initiator": (1, "", _PREFIX + "Failed to log in to target. Status: Target not found(515)\n"),
    "no_listener": (
        1,
        "",
        _PREFIX + "iscsi_service failed with : iscsi_service_reconnect_if_loggedin. Can not reconnect right now.\n\n",
    ),
}  # fmt: skip


def recorded(name: str) -> CommandResult:
    code, out, err = RECORDED[name]
    return CommandResult(("qemu-io",), code, out, err, 0.1)


def old_matcher(stderr: str) -> bool:
    """What the suite asserted before: any stderr with "log in" (or the status text) passed."""
    return "Authentication failure" in stderr or "Target not found" in stderr or "log in" in stderr


@pytest.mark.parametrize("case", ["wrong_chap", "no_chap", "wrong_user"])
def test_a_chap_refusal_is_recognised(case: str) -> None:
    assert assert_login_refused(recorded(case), CHAP_REFUSALS, case) == "Authentication failure (0x0201)"


def test_an_acl_refusal_is_recognised() -> None:
    assert assert_login_refused(recorded("unknown_initiator"), ACL_REFUSALS, "intruder") == "Target not found (0x0203)"


@pytest.mark.parametrize(
    ("case", "expected", "why"),
    [
        # the flow broken: the "wrong CHAP" login carried the right secret and got in
        ("right_chap", CHAP_REFUSALS, "was accepted"),
        # refused, but by the ACL: a CHAP test that sent the wrong IQN proves nothing about CHAP
        ("unknown_initiator", CHAP_REFUSALS, "refused as Target not found"),
        # refused by CHAP: an ACL test whose secret was wrong proves nothing about the ACL
        ("wrong_chap", ACL_REFUSALS, "refused as Authentication failure"),
        # not a login at all: nothing listens there
        ("no_listener", CHAP_REFUSALS, "not as a refused login"),
        ("no_listener", ACL_REFUSALS, "not as a refused login"),
    ],
)
def test_a_broken_flow_fails_the_refusal_check(case: str, expected: frozenset[int], why: str) -> None:
    with pytest.raises(AssertionError, match=why):
        assert_login_refused(recorded(case), expected, case)


def test_the_old_matcher_passed_the_broken_flows() -> None:
    # Why the matcher changed: each of these broken flows satisfied the suite's former check.
    assert old_matcher(recorded("unknown_initiator").stderr)  # as a "wrong CHAP" refusal
    assert old_matcher(recorded("wrong_chap").stderr)  # as an "unknown initiator" refusal


def test_login_status_is_none_for_success_and_other_failures() -> None:
    assert iscsi_login_status(recorded("right_chap").stderr) is None
    assert iscsi_login_status(recorded("no_listener").stderr) is None
    assert iscsi_login_status(recorded("wrong_chap").stderr) == (513, "Authentication failure")


# --- which suites run -----------------------------------------------------------------------------------------


def test_shipped_suites_are_the_test_modules() -> None:
    names = shipped_suites()
    assert {"infra", "storage", "replication"} <= set(names)
    assert "caching" in names and "lab_fixtures" not in names and "report" not in names
    assert "caching_checks" not in names and "caching_client" not in names  # the suite's helpers are no suites
    for name in names:
        assert (ROOT / "src" / "stacklab" / "suites" / f"test_{name}.py").is_file()


def test_resolve_suites_by_name_and_by_path(tmp_path: Path) -> None:
    mine = tmp_path / "my_checks.py"
    mine.write_text("def test_x():\n    pass\n")
    suites = resolve_suites(["infra", "./my_checks.py", "infra"], cwd=tmp_path)
    assert [s.name for s in suites] == ["infra", "my_checks.py"]
    assert suites[1].path == mine


@pytest.mark.parametrize(("wanted", "message"), [("nosuch", "not shipped"), ("./nope.py", "not found")])
def test_an_unknown_suite_is_bad_input(tmp_path: Path, wanted: str, message: str) -> None:
    with pytest.raises(SuiteError, match=message) as err:
        resolve_suites([wanted], cwd=tmp_path)
    assert err.value.exit_code == 2


def test_validate_refuses_a_suite_this_stacklab_does_not_ship(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every suite the schema names ships now: a stacklab without test_caching.py stands in for one that lacks it
    from stacklab.model import checks

    shipped = checks.shipped_suites()
    monkeypatch.setattr(checks, "shipped_suites", lambda: [s for s in shipped if s != "caching"])
    text = (ROOT / "labs" / "storage.yml").read_text().replace("suites: [infra, storage]", "suites: [infra, caching]")
    (tmp_path / "images").symlink_to(ROOT / "images")
    lab_file = tmp_path / "lab.yml"
    lab_file.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "suites:" in row)
    result = CliRunner().invoke(main, ["validate", str(lab_file)])
    assert result.exit_code == 2, result.output
    assert re.search(rf"lab\.yml:{line}:\d+: verify\.suites\[1\]: suite 'caching' is not shipped", result.output), (
        result.output
    )


def test_every_shipped_lab_lists_only_shipped_suites() -> None:
    result = CliRunner().invoke(main, ["validate", str(ROOT / "labs" / "aio.yml")])
    assert result.exit_code == 0, result.output


# --- a run without a lab: a user's file, the summary table and the HTML report --------------------------------

USER_FILE = """
import pytest

def test_writes_and_reads(evidence):
    evidence("written", "4096 bytes <sha> to /dev/sdb over eth1")

def test_needs_something():
    pytest.skip("the lab has no widget")

@pytest.mark.skip(reason="not on this host")
def test_marked():
    pass

def test_breaks():
    assert 1 == 2, "the bytes differ"
"""


def fake_lab_state(root: Path, lab: str) -> Path:
    state = root / lab
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({"version": 1, "lab": lab, "resources": {}}))
    (state / "ssh_config").write_text("")
    return state


def test_verify_runs_a_user_file_and_reports_what_it_proved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = fake_lab_state(tmp_path / "state", "demo")
    (tmp_path / "my_checks.py").write_text(USER_FILE)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VerifyError, match=r"suites failed: my_checks\.py") as err:
        run_suites("demo", tmp_path / "state", ["./my_checks.py"])
    assert getattr(err.value, "exit_code", None) == 3
    table = capsys.readouterr().err
    assert re.search(r"my_checks\.py\s+1\s+1\s+2\s", table), table
    assert "skipped 1x: the lab has no widget" in table and "skipped 1x: not on this host" in table
    (report,) = (state / "verify").glob("*.html")
    page = report.read_text()
    assert "4096 bytes &lt;sha&gt; to /dev/sdb over eth1" in page and "the bytes differ" in page
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r"<(script|link|img)\b|https?://|@import", page), "the report refers to an outside asset"
    (junit,) = (state / "verify").glob("*.xml")
    cases = {c.name: c for c in parse_junit(junit)}
    assert cases["test_writes_and_reads"].evidence == (("written", "4096 bytes <sha> to /dev/sdb over eth1"),)
    assert cases["test_breaks"].outcome == "failed"


def test_summary_table_and_html_from_junit(tmp_path: Path) -> None:
    junit = tmp_path / "r.xml"
    junit.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest">'
        '<testcase classname="test_storage" name="test_a" time="1.5"><properties>'
        '<property name="stacklab.suite" value="storage"/><property name="evidence.nic" value="eth1 +4 MiB"/>'
        "</properties></testcase>"
        '<testcase classname="test_storage" name="test_b" time="0.5">'
        '<skipped type="pytest.skip" message="Skipped: the lab has no NFS server">x</skipped></testcase>'
        '<testcase classname="test_infra" name="test_c" time="2"><failure message="boom">tb</failure></testcase>'
        "</testsuite></testsuites>"
    )
    cases = parse_junit(junit)
    rows = {r.suite: r for r in summarize(cases)}
    assert (rows["storage"].passed, rows["storage"].skipped, rows["storage"].seconds) == (1, 1, 2.0)
    assert rows["storage"].skip_reasons == {"the lab has no NFS server": 1}
    assert rows["infra"].failed == 1
    table = render_table(summarize(cases))
    assert table.splitlines()[0].split() == ["suite", "passed", "failed", "skipped", "seconds"]
    assert table.splitlines()[-1].split() == ["total", "1", "1", "1", "4.0"]
    page = render_html("demo", cases, started=0.0, command="stacklab verify demo")
    assert "eth1 +4 MiB" in page and "boom" in page


def test_fixtures_plugin_is_importable_without_a_lab() -> None:
    # verify loads it with -p for every file, a user's included; H4's baseline plugin sits beside it
    assert shutil.which("true")
    import stacklab.suites.lab_fixtures as fixtures

    assert fixtures.suite_name(ROOT / "src" / "stacklab" / "suites" / "test_storage.py") == "storage"
    assert fixtures.suite_name(Path("/tmp/my_checks.py")) == "my_checks.py"


def test_replication_tests_the_replica_count_the_lab_declares() -> None:
    from stacklab.suites.context import LabContext
    from stacklab.suites.test_replication import declared_replicas

    def context(declared: dict[str, object]) -> LabContext:
        return LabContext("demo", Path("/x"), Path("/x/ssh_config"), {}, {}, {}, declared)

    assert declared_replicas(context({"openstack": {"swift": {"replicas": 2}}})) == 2
    assert declared_replicas(context({"openstack": {"swift": {"replicas": 5}}})) == 5
    assert declared_replicas(context({"openstack": {"swift": {}}})) == 3  # the schema's default


def test_the_error_names_only_the_suites_that_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_lab_state(tmp_path / "state", "demo")
    (tmp_path / "good_checks.py").write_text("def test_fine():\n    pass\n")
    (tmp_path / "my_checks.py").write_text(USER_FILE)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VerifyError) as err:
        run_suites("demo", tmp_path / "state", ["./good_checks.py", "./my_checks.py"])
    assert "suites failed: my_checks.py (pytest exit 1)" in str(err.value), str(err.value)
