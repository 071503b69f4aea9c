"""A rebuilt node re-applies what ran on it: the first `up` after a recipe change converges, not the second."""

from __future__ import annotations

from stacklab.plan.resource import Action, Change, Resource
from stacklab.plan.ripple import rebuilds_node, ripple_rebuilds

NODE = Resource("node", "storage1", {"image": "storage"}, ("bridge/mgmt",))
NFS = Resource("nfs", "storage1", {"exports": []}, ("node/storage1",))
OTHER = Resource("service", "keystone", {}, ("node/infra1",))
RECORDED = {"hash": "old", "spec": {}}


def change(resource: Resource, action: Action, *reasons: str, recorded: object = RECORDED) -> Change:
    return Change(resource, action, reasons, None, recorded)  # type: ignore[arg-type]


def test_a_node_rebuilt_onto_a_new_image_reapplies_its_dependents_only() -> None:
    plan = [
        change(NODE, Action.UPDATE, "drift: image rootfs changed: /a -> /b"),
        change(NFS, Action.NOOP),
        change(OTHER, Action.NOOP),
    ]
    out = ripple_rebuilds(plan)
    assert [c.action for c in out] == [Action.UPDATE, Action.UPDATE, Action.NOOP]
    assert out[1].reasons == ("node/storage1 is rebuilt: what it ran is applied again",)


def test_replaced_or_vanished_nodes_are_rebuilds_a_stopped_one_is_not() -> None:
    assert rebuilds_node(change(NODE, Action.REPLACE, "image: 'a' -> 'b'"))
    assert rebuilds_node(change(NODE, Action.CREATE, "recorded in state but missing on the host"))
    assert not rebuilds_node(change(NODE, Action.UPDATE, "drift: stopped"))
    assert not rebuilds_node(change(NODE, Action.CREATE, "does not exist", recorded=None))
    assert not rebuilds_node(change(NFS, Action.REPLACE, "exports changed"))


def test_a_stopped_node_leaves_its_dependents_alone_and_updates_keep_their_reasons() -> None:
    out = ripple_rebuilds([change(NODE, Action.UPDATE, "drift: stopped"), change(NFS, Action.NOOP)])
    assert out[1].action is Action.NOOP
    out = ripple_rebuilds([change(NODE, Action.REPLACE, "x"), change(NFS, Action.UPDATE, "exports: 1 -> 2")])
    assert out[1].reasons == ("exports: 1 -> 2",)
