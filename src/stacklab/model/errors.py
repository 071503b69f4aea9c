"""Lab file errors: every problem at once, each with file:line:column, the field and a hint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stacklab.errors import EXIT_INVALID_LAB, StackLabError

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """('nodes', 'infra1', 'nics', 0) -> nodes.infra1.nics[0]"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


@dataclass(frozen=True)
class Issue:
    file: str
    line: int
    column: int
    field: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.field}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "field": self.field,
            "message": self.message,
            "hint": self.hint,
        }


class LabError(StackLabError):
    """The lab file is invalid. Raised before anything on the host is touched."""

    exit_code = EXIT_INVALID_LAB

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line, i.column, i.field))
        noun = "problem" if len(self.issues) == 1 else "problems"
        super().__init__(f"invalid lab file ({len(self.issues)} {noun}):\n" + "\n".join(map(str, self.issues)))
