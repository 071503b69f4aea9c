"""Fuzz the lab loader: the shipped labs, mutated at the YAML-event level and at the byte level, always load
(and then expand) or fail with a LabError naming file:line:column and field; the CLI exits 0 or 2 with no
traceback. What the fuzzing found is kept as broken labs (labs/broken/fuzz-*.yml, golden messages in
tests/golden/errors/), so each case stays tested without Hypothesis.

Bounded for CI: a fixed number of examples and a per-example deadline; under CI the search is derandomized
(the same examples every run), locally it explores (STACKLAB_FUZZ_EXAMPLES=5000 for a long hunt).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacklab.cli import main
from stacklab.model import LabError, load_lab_text
from stacklab.model.load import decode_lab_bytes
from stacklab.plan.expand import expand

ROOT = Path(__file__).resolve().parents[2]
LABS = sorted((ROOT / "labs").glob("*.yml"))
SEEDS = [p.read_bytes() for p in LABS]
EXAMPLES = int(os.environ.get("STACKLAB_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=20_000,  # ms per example: the loader is bounded; generous, as CI shares 2 cores with a lab
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # findings are kept as labs/broken/fuzz-*.yml, not in a local cache
)

NASTY_SCALARS = [
    "9" * 400, "1" + "0" * 30 + "TiB", "-1", "0", "1e400", ".inf", ".nan", "~", "null", "yes", "2001-13-45",
    "..", ".", "/", "/etc", "/srv/../etc", "../../../etc/cron.d/x", "--force", "a\nb", "a\tb", "a\x00b", "a\x07b",
    "\ud800", "x" * 5000, "storage", "mgmt", "ctl", "nosuch", "10.0.0.0/8", "127.0.0.0/8", "0.0.0.0/0",
    "8.8.8.0/24", "255.255.255.255", "<<", "!foo", "&a", "*a", "'", '"', "{", "[", "? x", "#",
]  # fmt: skip
NASTY_BYTES = [
    b"\x00", b"\xff", b"\xfe\xff", b"\xef\xbb\xbf", b"\r", b"\t", b"\n", b"  ", b"&a ", b"*a", b"<<: *a\n",
    b"!foo ", b"!!python/object:os.system ", b"[", b"]", b"{", b"}", b"? ", b": ", b"- ", b"'", b'"', b"\\",
    b"%YAML 1.1\n", b"---\n", b"...\n", b"\xc3\x28", b"9" * 400,
]  # fmt: skip


def check_input(data: bytes) -> None:
    """The property: a Lab (that expands) or a LabError whose issues all name file, line, column and field."""
    try:
        lab = load_lab_text(decode_lab_bytes(data, "fuzz.yml"), "fuzz.yml", base_dir=ROOT / "labs")
    except LabError as exc:
        assert exc.issues, "a LabError with no issue"
        for issue in exc.issues:
            assert issue.file == "fuzz.yml" and issue.line >= 1 and issue.column >= 1 and issue.field
        str(exc).encode("utf-8")  # printable: no lone surrogate reaches the terminal
        return
    expand(lab)


def check_cli(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yml"
        path.write_bytes(data)
        for command in ("validate", "graph"):
            result = CliRunner().invoke(main, [command, str(path)])
            assert result.exit_code in (0, 2), (command, result.exit_code, result.output, result.exception)
            assert "Traceback" not in result.output


# -- byte level -----------------------------------------------------------------------------------------------
@st.composite
def byte_mutants(draw: Any) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "flip", "repeat"]))
        if op == "insert":
            data[at:at] = draw(st.sampled_from(NASTY_BYTES) | st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 60))] * draw(st.integers(2, 30))
    return bytes(data)


@FUZZ
@given(byte_mutants())
def test_byte_mutants_of_the_shipped_labs_load_or_fail_cleanly(data: bytes) -> None:
    check_input(data)


# -- YAML event level -----------------------------------------------------------------------------------------
def _events(seed: bytes) -> list[yaml.Event]:
    return list(yaml.parse(seed.decode(), Loader=yaml.SafeLoader))


SEED_EVENTS = [_events(s) for s in SEEDS]


def _scalar(value: str, like: yaml.ScalarEvent | None = None) -> yaml.ScalarEvent:
    return yaml.ScalarEvent(None, None, (True, True), value, style=like.style if like else None)


@st.composite
def event_mutants(draw: Any) -> bytes:
    events = list(draw(st.sampled_from(SEED_EVENTS)))
    body = range(2, len(events) - 2)  # keep stream/document start and end
    anchors: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.sampled_from(body))
        event = events[at]
        op = draw(
            st.sampled_from(["value", "swap", "style", "anchor", "alias", "tag", "drop-pair", "dup", "nest", "key"])
        )
        if op == "swap" and isinstance(event, yaml.ScalarEvent):  # another field's value: names, refs, sizes
            others = [e.value for e in events if isinstance(e, yaml.ScalarEvent)]
            events[at] = _scalar(draw(st.sampled_from(others)), event)
        elif op == "value" and isinstance(event, yaml.ScalarEvent):
            events[at] = _scalar(draw(st.sampled_from(NASTY_SCALARS) | st.text(max_size=20)), event)
        elif op == "style" and isinstance(event, yaml.ScalarEvent):
            style = draw(st.sampled_from([None, "'", '"', "|", ">"]))
            events[at] = yaml.ScalarEvent(event.anchor, event.tag, event.implicit, event.value, style=style)
        elif op == "anchor" and isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent) and not event.anchor:
            anchors.append(f"a{len(anchors)}")
            events[at] = copy.copy(event)  # the seed's events are shared by every example
            events[at].anchor = anchors[-1]
        elif op == "alias" and isinstance(event, yaml.ScalarEvent) and anchors:
            events[at] = yaml.AliasEvent(draw(st.sampled_from(anchors)))
        elif op == "tag" and isinstance(event, yaml.ScalarEvent):
            tag = draw(st.sampled_from(["!foo", "tag:yaml.org,2002:int", "tag:yaml.org,2002:binary"]))
            events[at] = yaml.ScalarEvent(event.anchor, tag, (False, False), event.value)
        elif op == "drop-pair" and isinstance(event, yaml.ScalarEvent):
            del events[at]
        elif op == "dup":
            if isinstance(event, yaml.ScalarEvent):  # a repeated key, or one more list item
                events[at:at] = [_scalar(event.value, event)]
        elif op == "nest" and isinstance(event, yaml.ScalarEvent):
            depth = draw(st.integers(1, 60))
            events[at : at + 1] = (
                [yaml.SequenceStartEvent(None, None, True, flow_style=True) for _ in range(depth)]
                + [event]
                + [yaml.SequenceEndEvent() for _ in range(depth)]
            )
        elif op == "key" and isinstance(event, yaml.ScalarEvent):
            events[at : at + 1] = [
                yaml.MappingStartEvent(None, None, True, flow_style=True),
                _scalar("k"),
                event,
                yaml.MappingEndEvent(),
            ]
    try:
        return yaml.emit(events, allow_unicode=True).encode("utf-8", "surrogatepass")  # type: ignore[no-any-return]
    except (yaml.YAMLError, AttributeError, TypeError, IndexError):
        # An event sequence the emitter cannot write (e.g. an odd number of mapping items): the events as far
        # as they go, which is itself a broken lab file.
        return b"".join(str(e.value).encode("utf-8", "surrogatepass") + b"\n" for e in events if hasattr(e, "value"))


@FUZZ
@given(event_mutants())
def test_event_mutants_of_the_shipped_labs_load_or_fail_cleanly(data: bytes) -> None:
    check_input(data)


@settings(FUZZ, max_examples=max(20, EXAMPLES // 5))
@given(byte_mutants() | event_mutants())
def test_the_cli_exits_0_or_2_on_mutants_without_traceback(data: bytes) -> None:
    check_cli(data)
