"""What `stacklab verify` proved, read back from pytest's JUnit XML: a summary table per suite and a self-contained
HTML report (inline style, no external assets) with each test's outcome, time, skip reason or failure, and the
evidence it recorded (`evidence.<key>` properties: bytes written where, read back from where, over which NIC)."""

from __future__ import annotations

import html
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

EVIDENCE_PREFIX = "evidence."
MEASURED_PREFIX = "measured: "  # evidence keys that are figures: printed under their suite in the summary too
SUITE_PROPERTY = "stacklab.suite"
OUTCOMES = ("passed", "failed", "skipped")


@dataclass(frozen=True)
class Case:
    suite: str
    name: str
    outcome: str  # passed, failed (failures and errors), skipped
    seconds: float
    message: str = ""  # skip reason or failure message
    evidence: tuple[tuple[str, str], ...] = ()


@dataclass
class SuiteRow:
    suite: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)  # "what: value" of the evidence keyed MEASURED_PREFIX


def parse_junit(path: Path) -> list[Case]:
    """Every testcase of pytest's JUnit XML (xunit1 or xunit2)."""
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        props = [(p.get("name", ""), p.get("value", "")) for p in tc.iter("property")]
        module = tc.get("classname", "").rpartition(".")[2].removeprefix("test_")
        suite = next((v for k, v in props if k == SUITE_PROPERTY), module)
        outcome, message = "passed", ""
        for tag in ("failure", "error"):
            found = tc.find(tag)
            if found is not None:
                outcome, message = "failed", found.get("message") or (found.text or "").strip()
                break
        else:
            skipped = tc.find("skipped")
            if skipped is not None:
                outcome, message = "skipped", _skip_reason(skipped.get("message") or "")
        evidence = tuple((k.removeprefix(EVIDENCE_PREFIX), v) for k, v in props if k.startswith(EVIDENCE_PREFIX))
        cases.append(Case(suite, tc.get("name", ""), outcome, float(tc.get("time") or 0.0), message, evidence))
    return cases


def _skip_reason(message: str) -> str:
    # pytest writes "Skipped: <reason>" for pytest.skip() and the bare reason for skip marks
    return message.removeprefix("Skipped: ").strip() or "no reason given"


def summarize(cases: list[Case]) -> list[SuiteRow]:
    rows: dict[str, SuiteRow] = {}
    for case in cases:
        row = rows.setdefault(case.suite, SuiteRow(case.suite))
        setattr(row, case.outcome, getattr(row, case.outcome) + 1)
        row.seconds += case.seconds
        if case.outcome == "skipped":
            row.skip_reasons[case.message] = row.skip_reasons.get(case.message, 0) + 1
        row.figures += [
            f"{k.removeprefix(MEASURED_PREFIX)}: {v}" for k, v in case.evidence if k.startswith(MEASURED_PREFIX)
        ]
    return list(rows.values())


def render_table(rows: list[SuiteRow]) -> str:
    """The summary verify prints: one line per suite, then each skip reason under its suite."""
    header = ("suite", "passed", "failed", "skipped", "seconds")
    body = [(r.suite, str(r.passed), str(r.failed), str(r.skipped), f"{r.seconds:.1f}") for r in rows]
    total = (
        "total",
        str(sum(r.passed for r in rows)),
        str(sum(r.failed for r in rows)),
        str(sum(r.skipped for r in rows)),
        f"{sum(r.seconds for r in rows):.1f}",
    )
    widths = [max(len(line[i]) for line in (header, *body, total)) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )

    lines = [fmt(header)]
    for row, line in zip(rows, body, strict=True):
        lines.append(fmt(line))
        lines += [f"    skipped {n}x: {reason}" for reason, n in sorted(row.skip_reasons.items())]
        lines += [f"    measured {figure}" for figure in row.figures]
    lines.append(fmt(total))
    return "\n".join(lines)


_STYLE = """
body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f0f0f0}
.passed{color:#176f2c}.failed{color:#b00020;font-weight:bold}.skipped{color:#8a6d00}
pre{white-space:pre-wrap;margin:0;font-size:.9em}dl{margin:0}dt{font-weight:bold}dd{margin:0 0 .3em 1em}
"""


def render_html(lab: str, cases: list[Case], *, started: float, command: str) -> str:
    e = html.escape
    rows = summarize(cases)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
    out = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>stacklab verify {e(lab)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>stacklab verify {e(lab)}</h1><p>{e(command)}<br>started {e(stamp)}</p>",
        "<table><tr><th>suite</th><th>passed</th><th>failed</th><th>skipped</th><th>seconds</th></tr>",
    ]
    for r in rows:
        out.append(
            f"<tr><td>{e(r.suite)}</td><td>{r.passed}</td><td>{r.failed}</td><td>{r.skipped}</td>"
            f"<td>{r.seconds:.1f}</td></tr>"
        )
    out.append("</table>")
    for r in rows:
        out.append(f"<h2>{e(r.suite)}</h2><table><tr><th>test</th><th>result</th><th>s</th><th>evidence</th></tr>")
        for case in (c for c in cases if c.suite == r.suite):
            facts = "".join(f"<dt>{e(k)}</dt><dd><pre>{e(v)}</pre></dd>" for k, v in case.evidence)
            message = f"<pre>{e(case.message)}</pre>" if case.message else ""
            out.append(
                f'<tr><td>{e(case.name)}</td><td class="{case.outcome}">{case.outcome}{message}</td>'
                f"<td>{case.seconds:.1f}</td><td><dl>{facts}</dl></td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)
