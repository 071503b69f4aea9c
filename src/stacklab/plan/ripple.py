"""What a rebuilt node takes with it: the resources that ran on it must be applied again.

A node whose root is recreated (replaced, recreated after vanishing, or rebuilt onto a new image) comes back
without the services, targets and exports stacklab put on it, while their own specs are unchanged, so their diffs
say "noop". Left so, the first `up` after a recipe change fails further on (a service that needs another on the
fresh node finds nothing) and a second `up` repairs it. Every resource that depends on such a node is therefore
re-applied in the same run; their drivers converge, so on a node that in fact kept its files this costs time only.
A node that was merely stopped keeps its root: starting it again is not a rebuild.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from stacklab.plan.resource import Action, Change

# Drift a node driver reports that a restart repairs without touching the node's root.
_KEEPS_ROOT = frozenset({"drift: stopped"})


def rebuilds_node(change: Change) -> bool:
    """True when applying `change` to a node recreates its root file system."""
    if change.resource.kind != "node" or change.recorded is None:
        return False  # a first create has no dependents recorded on it yet
    if change.action in (Action.REPLACE, Action.CREATE):
        return True
    return change.action is Action.UPDATE and any(r not in _KEEPS_ROOT for r in change.reasons)


def ripple_rebuilds(changes: Iterable[Change]) -> list[Change]:
    """`changes` with every direct dependent of a rebuilt node turned from noop into an update (with its reason)."""
    changes = list(changes)
    rebuilt = {c.id for c in changes if rebuilds_node(c)}
    out = []
    for change in changes:
        hit = [d for d in change.resource.deps if d in rebuilt]
        if hit and change.action is Action.NOOP:
            reasons = tuple(f"{d} is rebuilt: what it ran is applied again" for d in hit)
            out.append(dataclasses.replace(change, action=Action.UPDATE, reasons=reasons))
        else:
            out.append(change)
    return out
