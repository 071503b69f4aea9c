"""The lab's SSH key pair: generated once with real ssh-keygen (or a fake), modes, idempotence, delete."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.nodes.sshkey import SshKeyDriver, key_path
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandResult, LocalRunner, Runner
from stacklab.plan.resource import Action, Change, Resource

RESOURCE = Resource("sshkey", "aio", {"type": "ed25519", "comment": "stacklab-aio"})


def _ctx(tmp_path: Path, runner: Runner) -> DriverContext:
    return DriverContext(lab=SimpleNamespace(name="aio"), runner=runner, state_dir=tmp_path / "state")  # type: ignore[arg-type]


def _fake_keygen(argv: tuple[str, ...]) -> CommandResult:
    path = Path(argv[argv.index("-f") + 1])
    comment = argv[argv.index("-C") + 1]
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n")
    path.with_name(path.name + ".pub").write_text(f"ssh-ed25519 AAAAfake {comment}\n")
    return CommandResult(argv, 0, "", "", 0.0)


def _create(driver: SshKeyDriver, ctx: DriverContext) -> dict[str, Any]:
    observed = driver.observe(RESOURCE, ctx)
    change = driver.diff(RESOURCE, observed, None)
    return dict(driver.apply(change, ctx))


def test_generate_with_fake_runner(tmp_path: Path) -> None:
    runner = FakeRunner().expect(["ssh-keygen"], responder=_fake_keygen, times=1)
    ctx = _ctx(tmp_path, runner)
    driver = SshKeyDriver()
    assert driver.observe(RESOURCE, ctx) is None
    outputs = _create(driver, ctx)
    private = key_path(ctx.state_dir)
    assert outputs == {"private_key": str(private), "public_key": "ssh-ed25519 AAAAfake stacklab-aio"}
    argv = runner.calls[0]
    assert argv[:7] == ("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C") and argv[7] == "stacklab-aio"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in private.parent.iterdir()) == ["id_ed25519", "id_ed25519.pub"]

    # Second run: observed, recorded, no change, no new key (the fake allows one ssh-keygen only).
    observed = driver.observe(RESOURCE, ctx)
    assert observed is not None and not observed.drift
    recorded = {"hash": RESOURCE.hash, "spec": dict(RESOURCE.spec), "outputs": outputs}
    assert driver.diff(RESOURCE, observed, recorded).action is Action.NOOP
    assert driver.apply(Change(RESOURCE, Action.UPDATE), ctx) == outputs


def test_loose_mode_is_drift_and_apply_fixes_it(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, FakeRunner().expect(["ssh-keygen"], responder=_fake_keygen, times=1))
    driver = SshKeyDriver()
    outputs = _create(driver, ctx)
    key_path(ctx.state_dir).chmod(0o644)
    observed = driver.observe(RESOURCE, ctx)
    assert observed is not None and observed.drift == ("private key mode 644, expected 600",)
    recorded = {"hash": RESOURCE.hash, "spec": dict(RESOURCE.spec), "outputs": outputs}
    change = driver.diff(RESOURCE, observed, recorded)
    assert change.action is Action.UPDATE
    driver.apply(change, ctx)
    assert stat.S_IMODE(key_path(ctx.state_dir).stat().st_mode) == 0o600


def test_failed_keygen_leaves_nothing(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, FakeRunner().expect(["ssh-keygen"], rc=1, stderr="no entropy"))
    with pytest.raises(Exception, match="no entropy"):
        _create(SshKeyDriver(), ctx)
    assert list((ctx.state_dir / "ssh").iterdir()) == []


def test_delete_removes_the_pair_and_is_idempotent(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, FakeRunner().expect(["ssh-keygen"], responder=_fake_keygen))
    driver = SshKeyDriver()
    outputs = _create(driver, ctx)
    recorded = {"spec": dict(RESOURCE.spec), "outputs": outputs}
    driver.delete(RESOURCE.id, recorded, ctx)
    assert not (ctx.state_dir / "ssh").exists()
    driver.delete(RESOURCE.id, recorded, ctx)


def test_unknown_type_is_refused(tmp_path: Path) -> None:
    resource = Resource("sshkey", "aio", {"type": "dsa", "comment": "x"})
    with pytest.raises(Exception, match="unsupported SSH key type 'dsa'"):
        SshKeyDriver().observe(resource, _ctx(tmp_path, FakeRunner()))


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_real_ssh_keygen(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, LocalRunner())
    outputs = _create(SshKeyDriver(), ctx)
    assert outputs["public_key"].startswith("ssh-ed25519 ") and outputs["public_key"].endswith(" stacklab-aio")
    fingerprint = LocalRunner().run(["ssh-keygen", "-l", "-f", outputs["private_key"]], timeout=30).stdout
    assert "(ED25519)" in fingerprint
