"""A Plan: the ordered changes for one lab, plus what cannot be built yet and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stacklab.plan.resource import Action, Change


@dataclass(frozen=True)
class Pending:
    """A resource the lab wants that this stacklab cannot build (no driver yet), or one that depends on it."""

    id: str
    reason: str


@dataclass
class Plan:
    lab: str
    changes: list[Change]  # desired resources, topological order
    deletions: list[Change] = field(default_factory=list)  # recorded resources no longer in the lab
    pending: list[Pending] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)

    @property
    def actionable(self) -> list[Change]:
        return [c for c in [*self.deletions, *self.changes] if c.action is not Action.NOOP]

    @property
    def is_empty(self) -> bool:
        return not self.actionable

    def summary(self) -> dict[str, int]:
        counts = Counter(c.action.value for c in [*self.deletions, *self.changes])
        return {a.value: counts.get(a.value, 0) for a in Action} | {"pending": len(self.pending)}

    def to_json(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "summary": self.summary(),
            "choices": self.choices,
            "changes": [c.to_json() for c in self.changes],
            "deletions": [c.to_json() for c in self.deletions],
            "pending": [{"id": p.id, "reason": p.reason} for p in self.pending],
        }

    def render(self) -> str:
        lines = []
        for change in [*self.deletions, *self.changes]:
            why = f"  ({'; '.join(change.reasons)})" if change.reasons else ""
            lines.append(f"  {change.action.symbol} {change.action.value:8} {change.id}{why}")
        for pending in self.pending:
            lines.append(f"  ? pending  {pending.id}  ({pending.reason})")
        s = self.summary()
        lines.append(
            f"Plan: {s['create']} to create, {s['update']} to update, {s['replace']} to replace, "
            f"{s['delete']} to delete, {s['noop']} unchanged, {s['pending']} pending."
        )
        return "\n".join(lines)
