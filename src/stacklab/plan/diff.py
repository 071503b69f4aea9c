"""The pure decision: desired spec + observation + recorded state -> Change. Tested with fixtures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stacklab.errors import PlanError
from stacklab.plan.resource import Action, Change, Observed, Resource


def default_diff(
    resource: Resource,
    observed: Observed | None,
    recorded: Mapping[str, Any] | None,
    *,
    updatable: frozenset[str] = frozenset(),
    added: frozenset[str] = frozenset(),
) -> Change:
    """Decide create / update / replace / noop.

    `updatable` names the spec keys a driver can change in place; a change to any other key replaces.
    `added` names keys a later stacklab added to the spec, derived from the rest of the lab file (e.g. nova's node
    addresses, which the driver once read from the lab): a recorded spec that lacks one was recorded before it
    existed, so its absence is no change (a running lab is not rebuilt for a key it never saw). A key the recorded
    spec has is compared as usual.
    An object that exists without the lab's ownership mark is never adopted or touched: it is a plan error.
    """
    if observed is None:
        reason = "does not exist" if recorded is None else "recorded in state but missing on the host"
        return Change(resource, Action.CREATE, (reason,), observed, recorded)
    if not observed.owned:
        raise PlanError(
            "exists on the host but is not owned by this lab",
            resource=resource.id,
            hint="rename it in the lab file (or set a different lab prefix); stacklab never touches foreign objects",
        )
    old_spec: Mapping[str, Any] = (recorded or {}).get("spec", {})
    if recorded is not None and recorded.get("hash") != resource.hash:
        changed = sorted(k for k in set(old_spec) | set(resource.spec) if old_spec.get(k) != resource.spec.get(k))
        recorded_before_added = old_spec and changed and all(k in added and k not in old_spec for k in changed)
        if not recorded_before_added:
            reasons = tuple(f"{k}: {old_spec.get(k)!r} -> {resource.spec.get(k)!r}" for k in changed)
            action = Action.UPDATE if changed and set(changed) <= updatable else Action.REPLACE
            return Change(resource, action, reasons or ("spec changed",), observed, recorded)
        # else: recorded before those keys existed; judged as an unchanged spec (drift, else nothing to do)
    if observed.drift:
        return Change(resource, Action.UPDATE, tuple(f"drift: {d}" for d in observed.drift), observed, recorded)
    if recorded is None:
        # Ours (marked) but unrecorded: an earlier `up` died between creating it and saving state. Adopt it.
        return Change(resource, Action.UPDATE, ("owned but not recorded: adopting",), observed, recorded)
    return Change(resource, Action.NOOP, (), observed, recorded)
