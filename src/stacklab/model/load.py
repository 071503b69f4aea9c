"""Load a lab file: bytes -> YAML -> plain data with a line mark for every key -> validated, cross-checked Lab.

PyYAML's composer keeps marks on nodes; we walk the node tree ourselves so every path in the data has a
(line, column), and pydantic's error locations and our cross-reference checks can point into the file.

A lab file is untrusted input: every way in ends in a LabError (exit 2) in bounded time and memory. The file is
read at most MAX_BYTES (so /dev/zero ends), must be UTF-8 (a BOM is fine), may not nest deeper than MAX_DEPTH
(PyYAML's composer recurses per level), may not expand to more than MAX_VALUES values through aliases (a
344-byte "billion laughs" otherwise eats the host's memory), and may not use tags, merge keys or complex keys
(none has a meaning in a lab file; tags would reach constructors we do not want, merge keys hide fields).
"""

from __future__ import annotations

import codecs
import difflib
import fcntl
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from stacklab.model.checks import cross_check
from stacklab.model.errors import Issue, LabError, Loc, format_loc
from stacklab.model.lab import NAME_PATTERN, Lab
from stacklab.model.suite_checks import Problem

Marks = dict[Loc, tuple[int, int]]

MAX_BYTES = 256 * 1024  # the biggest shipped lab is ~3 KiB; PyYAML reads ~25 KiB/s of dense flow text
MAX_DEPTH = 32  # a lab file nests 6 levels deep; PyYAML's composer and our walker recurse per level
MAX_VALUES = 20_000  # scalars and collections, composed and after alias expansion (aio.yml has ~600)
MAX_SCALAR = 4096  # characters in one value after alias expansion (no field needs more)
MERGE_TAG = "tag:yaml.org,2002:merge"
# C0/C1 controls, DEL, surrogates and non-characters; tab, newline and carriage return are whitespace to YAML.
_FILE_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")
# In a value, newlines and tabs are fine only where a field says so (description); every other field's pattern
# refuses them. Everything else that is a control character is refused here, for every string.
_VALUE_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


class _Refused(Exception):
    """One problem that stops reading the file (the rest of it cannot be trusted to be read further)."""

    def __init__(self, mark: yaml.Mark | None, field: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.line, self.column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        self.field, self.message, self.hint = field, message, hint

    def issue(self, file: str) -> Issue:
        return Issue(file, self.line, self.column, self.field, self.message, self.hint)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer refuses tags and bounds nesting before it recurses, tracking the field path."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[str | int] = []
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if parent is not None:
            self._path.append(index.value if isinstance(index, yaml.ScalarNode) else index)
        try:
            field = format_loc(tuple(p if isinstance(p, int) else str(p) for p in self._path))
            self._nodes += 1
            if self._nodes > MAX_VALUES:  # stop composing early: a big file is refused before it is all parsed
                raise _Refused(event.start_mark, field, f"the file holds more than {MAX_VALUES} values")
            if len(self._path) > MAX_DEPTH:
                raise _Refused(event.start_mark, field, f"the file nests deeper than {MAX_DEPTH} levels")
            tag = getattr(event, "tag", None)
            if tag is not None and not isinstance(event, yaml.AliasEvent):
                raise _Refused(
                    event.start_mark, field, f"YAML tag {tag!r} is not allowed", "lab files use plain values"
                )
            return super().compose_node(parent, index)
        finally:
            if parent is not None:
                self._path.pop()


class _Walker:
    """Turns a composed YAML node tree into data, recording marks and duplicate-key errors."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.marks: Marks = {}
        self.issues: list[Issue] = []
        self.values = 0
        self.refused: set[Loc] = set()  # values already reported here; pydantic's word on them adds nothing
        self._active: set[int] = set()  # nodes on the current path: an alias back into one is recursive
        self._constructor = yaml.SafeLoader("")  # only used to resolve scalar types

    def walk(self, node: yaml.Node, loc: Loc) -> Any:
        mark = (node.start_mark.line + 1, node.start_mark.column + 1)
        self.marks.setdefault(loc, mark)
        self.values += 1
        if self.values > MAX_VALUES:
            raise _Refused(
                node.start_mark,
                format_loc(loc),
                f"the file expands to more than {MAX_VALUES} values",
                "aliases (*name) multiply what they point at; write the values out",
            )
        if len(loc) > MAX_DEPTH:
            raise _Refused(node.start_mark, format_loc(loc), f"the file nests deeper than {MAX_DEPTH} levels")
        if id(node) in self._active:
            raise _Refused(node.start_mark, format_loc(loc), "recursive alias: a value contains itself")
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, loc)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            return [self.walk(item, (*loc, i)) for i, item in enumerate(node.value)]
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key_node.tag == MERGE_TAG:
                self._issue(where, loc, "merge keys (<<) are not allowed", "write the fields out")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._issue(where, loc, "a key must be a plain value, not a list or mapping")
                continue
            key = self._scalar(key_node, loc)
            if key is None:
                continue  # _scalar reported it
            key_loc = (*loc, key if isinstance(key, str | int) else str(key))
            try:
                seen = key in out
            except TypeError:  # unhashable: cannot happen for scalars, but never crash on a key
                seen = False
            if seen:
                self._issue(
                    where,
                    key_loc,
                    f"duplicate key {key!r}",
                    "each key may appear once; the second one would silently win",
                )
                continue
            self.marks[key_loc] = where
            out[key] = self.walk(value_node, key_loc)
        return out

    def _scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        where = (node.start_mark.line + 1, node.start_mark.column + 1)
        if len(node.value) > MAX_SCALAR:
            self._issue(where, loc, f"a value longer than {MAX_SCALAR} characters")
            return None
        bad = _VALUE_CONTROL.search(node.value)
        if bad:
            self._issue(
                where, loc, f"control character U+{ord(bad.group()):04X} in a value", "lab values are printable text"
            )
            return None
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:  # e.g. an int too long to convert, a bad date
            self._issue(where, loc, f"cannot read value {node.value[:40]!r}: {str(exc).splitlines()[0]}")
            return None

    def _issue(self, where: tuple[int, int], loc: Loc, message: str, hint: str | None = None) -> None:
        self.refused.add(loc)
        self.issues.append(Issue(self.file, *where, format_loc(loc), message, hint))


def mark_for(marks: Marks, loc: Loc) -> tuple[int, int]:
    """The mark of the longest prefix of loc present in the file (a missing field points at its parent)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in marks:
            return marks[loc[:end]]
    return (1, 1)


def _known_fields(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for arg in _types_in(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _known_fields(arg, seen)
    return names


def _types_in(annotation: Any) -> Iterable[Any]:
    yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _types_in(arg)


def _clean_loc(raw: Iterable[Any]) -> Loc:
    loc: Loc = tuple(p for p in raw if isinstance(p, str | int))
    # Drop pydantic's internal union/validator tags (e.g. 'function-before[...]') from the path.
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))


def _pydantic_issues(exc: ValidationError, file: str, marks: Marks) -> list[Issue]:
    known = sorted(_known_fields(Lab))
    issues = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err["loc"])
        message, hint = err["msg"], None
        if err["type"] == "extra_forbidden":
            field = str(loc[-1]) if loc else ""
            message = f"unknown field {field!r}"
            close = difflib.get_close_matches(field, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see `stacklab schema` for the fields a lab file takes"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") == NAME_PATTERN:
            message = "a name is 1-31 lowercase letters, digits or '-', starting with a letter, not ending in '-'"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        line, col = mark_for(marks, loc)
        issues.append(Issue(file, line, col, format_loc(loc), message, hint))
    return issues


# -- schema-invalid labs still get their cross-reference checks ------------------------------------------------
_PLACEHOLDERS: dict[Loc, Any] = {("name",): "invalid-name"}  # what a required top-level field is replaced with


IndexMaps = dict[Loc, list[int]]  # a list's location -> the original index of each item still in it


def _prune(data: dict[str, Any], loc: Loc, missing: bool, index_maps: IndexMaps) -> Loc | None:
    """Remove the invalid part at loc: a dict entry (a field with a default falls back to it) or a list item
    (its index is remembered, so problems found later point at the item's place in the file)."""
    target = loc[:-1] if missing else loc
    while target:
        parent: Any = data
        for part in target[:-1]:
            if isinstance(parent, dict):
                parent = parent.get(part)
            elif isinstance(parent, list) and isinstance(part, int) and 0 <= part < len(parent):
                parent = parent[part]
            else:
                parent = None
        last = target[-1]
        if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
            original = index_maps.setdefault(target[:-1], list(range(len(parent))))
            del parent[last], original[last]
            return target
        if isinstance(parent, dict) and last in parent:
            if target in _PLACEHOLDERS:
                if parent[last] == _PLACEHOLDERS[target]:
                    return None
                parent[last] = _PLACEHOLDERS[target]
            else:
                del parent[last]
            return target
        target = target[:-1]
    return None


def _original_loc(loc: Loc, index_maps: IndexMaps) -> Loc:
    """A location in the pruned data -> the same item's location in the file (innermost lists first)."""
    for list_loc in sorted(index_maps, key=len, reverse=True):
        n = len(list_loc)
        index = loc[n] if len(loc) > n and loc[:n] == list_loc else None
        if isinstance(index, int) and index < len(index_maps[list_loc]):
            loc = (*list_loc, index_maps[list_loc][index], *loc[n + 1 :])
    return loc


def _loc_key(loc: Loc) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in loc)


def _validate_pruned(data: dict[str, Any], base_dir: Path | None) -> tuple[Lab | None, list[Loc], IndexMaps]:
    """Validate after removing every invalid part, so the cross-reference checks can still run on the rest."""
    pruned: list[Loc] = []
    index_maps: IndexMaps = {}
    for _ in range(50):
        try:
            return Lab.model_validate(data, context={"base_dir": base_dir}), pruned, index_maps
        except ValidationError as exc:
            progress = False
            errors = [(_clean_loc(err["loc"]), err["type"] == "missing") for err in exc.errors(include_url=False)]
            # Last items first: removing one list item must not shift the next one this round removes.
            for loc, missing in sorted(errors, key=lambda e: _loc_key(e[0]), reverse=True):
                removed = _prune(data, loc, missing, index_maps)
                if removed is not None:
                    if not isinstance(removed[-1], int):
                        pruned.append(removed)
                    progress = True
            if not progress:
                break
    return None, pruned, index_maps


def _follows_from_pruning(problem: Problem, pruned: list[Loc]) -> bool:
    """A cross-check problem that only exists because an invalid part was removed (already reported)."""
    loc, message, _ = problem
    for gone in pruned:
        if loc[: len(gone)] == gone or format_loc(gone) in message:
            return True
        if len(gone) == 2 and gone[0] in ("nodes", "networks", "images") and repr(gone[1]) in message:
            return True
        if gone == ("name",) and loc[:1] == ("networks",) and loc[-1:] == ("bridge",):
            return True  # the kernel prefix derives from the name: do not judge bridge names by a placeholder
    return False


def _line_column(buffer: str | bytes, offset: int) -> tuple[int, int]:
    """1-based line and column of `offset` in the file's text (or its raw bytes, before decoding)."""
    newline = "\n" if isinstance(buffer, str) else b"\n"
    line = buffer.count(newline, 0, offset) + 1  # type: ignore[arg-type]
    return line, offset - (buffer.rfind(newline, 0, offset) + 1) + 1  # type: ignore[arg-type]


def _flow_nesting(text: str, file: str) -> Issue | None:
    """Refuse deep flow nesting before PyYAML's scanner sees it: it keeps a possible simple key per open
    bracket and rescans them for every token, so 20,000 nested `[` cost seconds before the composer (which
    caps the depth) gets its first node. Brackets inside strings count too: no lab has 3 * MAX_DEPTH of them."""
    depth = 0
    for index, char in enumerate(text):
        if char in "[{":
            depth += 1
            if depth > 3 * MAX_DEPTH:
                line, column = _line_column(text, index)
                return Issue(file, line, column, "(file)", f"the file nests deeper than {MAX_DEPTH} levels")
        elif char in "]}" and depth:
            depth -= 1
    return None


def _refuse_unreadable(text: str, file: str) -> None:
    """Before any parsing: flow collections nested too deeply, or control characters in the text."""
    too_deep = _flow_nesting(text, file)
    if too_deep is not None:
        raise LabError([too_deep])
    bad = _FILE_CONTROL.search(text)
    if bad:
        line, column = _line_column(text, bad.start())
        raise LabError(
            [
                Issue(
                    file,
                    line,
                    column,
                    "(file)",
                    f"control character U+{ord(bad.group()):04X} in the file",
                    "a lab file is printable UTF-8 text",
                )
            ]
        )


def _parse(text: str, file: str, walker: _Walker) -> Any:
    """The YAML document as plain data, walked with line marks; every YAML failure as a LabError."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        if node is None:
            raise LabError([Issue(file, 1, 1, "(top level)", "the lab file is empty", "start from labs/aio.yml")])
        return walker.walk(node, ())
    except _Refused as refused:
        raise LabError([*walker.issues, refused.issue(file)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise LabError([Issue(file, line, col, "(syntax)", f"YAML syntax error: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:  # ReaderError and friends carry no mark
        raise LabError([Issue(file, 1, 1, "(syntax)", f"YAML error: {str(exc).splitlines()[0]}")]) from None
    except RecursionError:  # defence in depth: MAX_DEPTH keeps every recursion far below the interpreter's limit
        raise LabError([Issue(file, 1, 1, "(top level)", "the file nests too deeply")]) from None


def load_lab_text(text: str, file: str = "<string>", *, base_dir: Path | None = None) -> Lab:
    """Parse and validate lab text; raises LabError listing every problem found."""
    _refuse_unreadable(text, file)
    walker = _Walker(file)
    data = _parse(text, file, walker)
    if not isinstance(data, dict):
        raise LabError([*walker.issues, Issue(file, 1, 1, "(top level)", "a lab file is a mapping of fields")])
    issues = [*walker.issues]
    reported = {format_loc(loc) for loc in walker.refused}
    try:
        lab: Lab | None = Lab.model_validate(data, context={"base_dir": base_dir})
        pruned: list[Loc] = []
        index_maps: IndexMaps = {}
    except ValidationError as exc:
        issues += [i for i in _pydantic_issues(exc, file, walker.marks) if i.field not in reported]
        lab, pruned, index_maps = _validate_pruned(data, base_dir)
    if lab is not None:
        for problem in cross_check(lab, base_dir=base_dir):
            if pruned and _follows_from_pruning(problem, pruned):
                continue
            loc, message, hint = problem
            loc = _original_loc(loc, index_maps) if index_maps else loc
            issues.append(Issue(file, *mark_for(walker.marks, loc), format_loc(loc), message, hint))
    if issues or lab is None:
        raise LabError(issues)
    return lab.model_copy(update={"source": file})


def read_lab_file(path: Path) -> str:
    """The lab file's text: at most MAX_BYTES read (so a device or a pipe cannot make us read forever), UTF-8."""
    file = str(path)
    if path.is_dir():
        raise LabError([Issue(file, 1, 1, "(file)", "is a directory, not a lab file", "give the path of a .yml file")])
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to returns at once (and reads as empty) instead of hanging.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_BYTES:
                chunk = os.read(fd, MAX_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise LabError([Issue(file, 1, 1, "(file)", f"cannot read lab file: {exc.strerror}")]) from None
    data = b"".join(chunks)
    if len(data) > MAX_BYTES:
        raise LabError(
            [Issue(file, 1, 1, "(file)", f"larger than {MAX_BYTES // 1024} KiB: not a lab file", "labs are a few KiB")]
        )
    return decode_lab_bytes(data, file)


def decode_lab_bytes(data: bytes, file: str) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise LabError([Issue(file, 1, 1, "(file)", "the file is UTF-16 or UTF-32, not UTF-8", "save it as UTF-8")])
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_column(data, exc.start)
        raise LabError(
            [
                Issue(
                    file,
                    line,
                    column,
                    "(file)",
                    f"not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded",
                    "save the lab file as UTF-8 (Latin-1 and UTF-16 are not read)",
                )
            ]
        ) from None


def load_lab(path: str | Path) -> Lab:
    path = Path(path)
    text = read_lab_file(path)
    # Recipes and templates are found relative to the project that holds labs/.
    return load_lab_text(text, str(path), base_dir=path.resolve().parent)
