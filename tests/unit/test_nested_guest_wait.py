"""The suites wait longer for a guest on a VM compute (nested TCG) than on an LXC one, and bound such cases longer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stacklab.suites import guest
from stacklab.suites.context import ENV, LabContext


def context(kind: str) -> LabContext:
    return LabContext.from_dict({
        "lab": "nest", "state_dir": "/tmp/nest", "ssh_config": "/tmp/nest/ssh_config",
        "nodes": {"ctl1": {"kind": "container"}, "cmp1": {"kind": kind}},
        "outputs": {"service/nova": {"computes": ["cmp1"]}}, "networks": {},
    })  # fmt: skip


def test_a_guest_on_a_vm_compute_gets_the_nested_wait_and_one_on_a_container_the_default() -> None:
    assert guest.guest_wait(context("vm"), 300.0) == guest.NESTED_GUEST_WAIT
    assert guest.guest_wait(context("container"), 300.0) == 300.0
    assert guest.guest_wait(context("container"), 900.0) == 900.0


def test_the_case_bound_follows_the_lab_context_verify_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert guest.nested_timeout(900).args == (900,)  # collected outside verify: the default
    for kind, bound in (("vm", guest.NESTED_CASE_TIMEOUT), ("container", 900)):
        ctx = context(kind)
        path = tmp_path / f"{kind}.json"
        path.write_text(json.dumps({"lab": ctx.lab, "state_dir": str(ctx.state_dir), "ssh_config": str(ctx.ssh_config),
                                    "nodes": ctx.nodes, "outputs": ctx.outputs, "networks": {}}))  # fmt: skip
        monkeypatch.setenv(ENV, str(path))
        assert guest.nested_timeout(900).args == (bound,)
