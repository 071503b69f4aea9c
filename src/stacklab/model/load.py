"""Load a lab file: YAML -> plain data with a line mark for every key -> validated, cross-checked Lab.

PyYAML's composer keeps marks on nodes; we walk the node tree ourselves so every path in the data has a
(line, column), and pydantic's error locations and our cross-reference checks can point into the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from stacklab.model.checks import cross_check
from stacklab.model.errors import Issue, LabError, Loc, format_loc
from stacklab.model.lab import Lab

Marks = dict[Loc, tuple[int, int]]


class _Walker:
    """Turns a composed YAML node tree into data, recording marks and duplicate-key errors."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.marks: Marks = {}
        self.issues: list[Issue] = []
        self._constructor = yaml.SafeLoader("")  # only used to resolve scalar types

    def walk(self, node: yaml.Node, loc: Loc) -> Any:
        self.marks.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node, deep=True)
                key_loc = (*loc, key if isinstance(key, str | int) else str(key))
                mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in out:
                    self.issues.append(
                        Issue(
                            self.file,
                            *mark,
                            format_loc(key_loc),
                            f"duplicate key {key!r}",
                            "each key may appear once; the second one would silently win",
                        )
                    )
                    continue
                self.marks[key_loc] = mark
                out[key] = self.walk(value_node, key_loc)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*loc, i)) for i, item in enumerate(node.value)]
        return self._constructor.construct_object(node, deep=True)


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


def _pydantic_issues(exc: ValidationError, file: str, marks: Marks) -> list[Issue]:
    known = sorted(_known_fields(Lab))
    issues = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
        # Drop pydantic's internal union/validator tags (e.g. 'function-before[...]') from the path.
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        message, hint = err["msg"], None
        if err["type"] == "extra_forbidden":
            field = str(loc[-1]) if loc else ""
            message = f"unknown field {field!r}"
            close = difflib.get_close_matches(field, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see `stacklab schema` for the fields a lab file takes"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        line, col = mark_for(marks, loc)
        issues.append(Issue(file, line, col, format_loc(loc), message, hint))
    return issues


def load_lab_text(text: str, file: str = "<string>", *, base_dir: Path | None = None) -> Lab:
    """Parse and validate lab text; raises LabError listing every problem found."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise LabError([Issue(file, line, col, "(syntax)", f"YAML syntax error: {exc.problem or exc}")]) from None
    if node is None:
        raise LabError([Issue(file, 1, 1, "(top level)", "the lab file is empty", "start from labs/aio.yml")])
    walker = _Walker(file)
    data = walker.walk(node, ())
    if not isinstance(data, dict):
        raise LabError([*walker.issues, Issue(file, 1, 1, "(top level)", "a lab file is a mapping of fields")])
    try:
        lab = Lab.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise LabError([*walker.issues, *_pydantic_issues(exc, file, walker.marks)]) from None
    issues = [*walker.issues]
    for loc, message, hint in cross_check(lab, base_dir=base_dir):
        issues.append(Issue(file, *mark_for(walker.marks, loc), format_loc(loc), message, hint))
    if issues:
        raise LabError(issues)
    return lab.model_copy(update={"source": file})


def load_lab(path: str | Path) -> Lab:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise LabError([Issue(str(path), 1, 1, "(file)", f"cannot read lab file: {exc.strerror}")]) from None
    # Recipes and templates are found relative to the project that holds labs/.
    return load_lab_text(text, str(path), base_dir=path.resolve().parent)
