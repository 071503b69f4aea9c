"""node_faults: the power cut the suites inflict on a VM node, and the wait for the node's return."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest

from stacklab.exec.fake import FakeRunner
from stacklab.exec.ssh import SSHError
from stacklab.suites import node_faults
from stacklab.suites.context import LabContext


class FakeLab:
    """LabContext.runner's part: a new connection per call, here the next scripted answer."""

    def __init__(self, *answers: FakeRunner | Exception) -> None:
        self.answers = list(answers)
        self.opened = 0

    @contextmanager
    def runner(self, node: str) -> Iterator[FakeRunner]:
        self.opened += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        yield answer


def booted(boot: str) -> FakeRunner:
    return FakeRunner().expect(["cat", node_faults.BOOT_ID], stdout=f"{boot}\n")


def as_lab(fake: FakeLab) -> Any:
    return cast(LabContext, fake)


def test_power_cut_resets_the_kernel_after_the_command_returns_and_gives_the_old_boot_id() -> None:
    node = booted("b1").expect(["sh", "-c"])
    assert node_faults.power_cut(as_lab(FakeLab(node)), "storage1") == "b1"
    (cut,) = [c for c in node.calls if c[0] == "sh"]
    assert "echo b > /proc/sysrq-trigger" in cut[2] and "sleep 1" in cut[2] and cut[2].rstrip().endswith("&")


def test_the_node_is_back_once_it_answers_with_another_boot_id() -> None:
    lab = FakeLab(booted("b1"), SSHError("cannot connect to root@10.0.0.2:22: timed out"), booted("b2"))
    assert node_faults.wait_for_return(as_lab(lab), "storage1", "b1", budget=5.0, interval=0.0) >= 0.0
    assert lab.opened == 3  # each probe on a connection of its own


def test_a_node_that_never_returns_is_named_with_its_last_answer() -> None:
    lab = FakeLab(SSHError("cannot connect to root@10.0.0.2:22: No route to host"))
    with pytest.raises(AssertionError, match=r"storage1 did not come back within 0.05 s .*No route to host"):
        node_faults.wait_for_return(as_lab(lab), "storage1", "b1", budget=0.05, interval=0.01)


def test_a_node_that_never_went_down_is_not_back() -> None:
    with pytest.raises(AssertionError, match="still boot id b1: the node has not gone down yet"):
        node_faults.wait_for_return(as_lab(FakeLab(booted("b1"))), "storage1", "b1", budget=0.05, interval=0.01)
