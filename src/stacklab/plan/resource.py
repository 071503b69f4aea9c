"""What a lab expands to: resources with a JSON-able desired spec and dependencies, and the changes to them."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def spec_hash(spec: Mapping[str, Any]) -> str:
    """Stable content hash of a spec: the key a second `up` compares to decide "unchanged"."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Resource:
    """One thing the lab owns on the host, e.g. `bridge/mgmt` or `node/storage1`."""

    kind: str
    name: str
    spec: Mapping[str, Any]
    deps: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def hash(self) -> str:
        return spec_hash(self.spec)


@dataclass(frozen=True)
class Observed:
    """What a driver found on the host for one resource (read-only observation).

    `owned` says whether the object carries this lab's ownership mark; an object that exists but is not
    owned is a clash the planner refuses to touch.
    """

    owned: bool = True
    facts: Mapping[str, Any] = field(default_factory=dict)
    # Where the object is owned but differs from the spec in a way the driver can see (e.g. MTU changed by hand).
    drift: tuple[str, ...] = ()


class Action(enum.StrEnum):
    NOOP = "noop"
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"

    @property
    def symbol(self) -> str:
        return {"noop": " ", "create": "+", "update": "~", "replace": "±", "delete": "-"}[self.value]


@dataclass(frozen=True)
class Change:
    """What apply will do to one resource, and why."""

    resource: Resource
    action: Action
    reasons: tuple[str, ...] = ()
    observed: Observed | None = None
    recorded: Mapping[str, Any] | None = None  # the state file's entry, if any

    @property
    def id(self) -> str:
        return self.resource.id

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.resource.kind,
            "name": self.resource.name,
            "action": self.action.value,
            "reasons": list(self.reasons),
            "deps": list(self.resource.deps),
            "spec": dict(self.resource.spec),
        }
