"""NoCloud seeds: golden renders, validation, instance-id behaviour, the seed directory and the cidata ISO."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacklab.drivers.nodes import seed as seed_mod
from stacklab.drivers.nodes.seed import (
    SEED_FILES,
    SeedError,
    find_templates_dir,
    iso_argv,
    make_seed_iso,
    render_nocloud,
    validate_seed,
    write_seed_dir,
)
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import LocalRunner
from tests.golden_util import check_golden

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0stacklabtestkeyonlyxxxxxxxxxxxxxxxxxxxxxxx stacklab-aio"
HOSTS = {"controller": "10.231.0.10", "storage1": "10.231.0.11", "compute1": "10.231.0.12"}


def _nic(index: int, network: str, address: str, gateway: str, mtu: int) -> dict[str, Any]:
    return {
        "network": network,
        "device": f"eth{index}",
        "bridge": f"sl-aio-{network[:4]}",
        "host_ifname": f"slaio-st1-{index}",
        "address": address,
        "gateway": gateway,
        "mtu": mtu,
        "mac": f"02:5C:00:00:0{index}:11",
    }


def _spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "container",
        "hostname": "storage1",
        "image": "storage",
        "nics": [
            _nic(0, "mgmt", "10.231.0.11/24", "10.231.0.1", 1500),
            _nic(1, "storage", "10.232.0.11/24", "10.232.0.1", 9000),
        ],
        "roles": ["storage"],
        "devices": [],
    }
    spec.update(overrides)
    return spec


def _render(**kwargs: Any) -> dict[str, str]:
    args: dict[str, Any] = {
        "lab_name": "aio",
        "node_name": "storage1",
        "node_spec": _spec(),
        "public_key": KEY,
        "hosts": HOSTS,
    }
    args.update(kwargs)
    return render_nocloud(**args)


@pytest.mark.parametrize("name", SEED_FILES)
def test_golden(name: str) -> None:
    check_golden(f"seed/storage1/{name}", _render()[name])


def test_golden_single_nic_without_mgmt_network() -> None:
    spec = _spec(hostname="lone", nics=[_nic(0, "lan", "192.168.5.2/24", "192.168.5.1", 1400)])
    files = _render(node_name="lone", node_spec=spec, hosts={"lone": "192.168.5.2"})
    for name in SEED_FILES:
        check_golden(f"seed/lone/{name}", files[name])


def test_sshd_listens_on_the_nodes_lab_addresses_only() -> None:
    """The drop-in cloud-init writes before sshd starts: one ListenAddress per lab NIC (br-mgmt for stacklab and
    nova's migrations, br-storage for cephadm), no wildcard, addresses without their prefix."""
    data = yaml.safe_load(_render()["user-data"])
    dropins = {f["path"]: f["content"] for f in data["write_files"] if f["path"].startswith("/etc/ssh/sshd_config.d/")}
    assert all(path.endswith(".conf") for path in dropins)  # Debian's sshd_config includes sshd_config.d/*.conf only
    content = dropins["/etc/ssh/sshd_config.d/50-stacklab-listen.conf"]
    listen = [line for line in content.splitlines() if not line.startswith("#")]
    assert listen == ["ListenAddress 10.231.0.11", "ListenAddress 10.232.0.11"]


def test_password_logins_are_off_without_restarting_sshd() -> None:
    """ssh_pwauth makes cloud-init's set-passwords edit sshd_config and restart sshd during the first boot; a drop-in
    written before sshd starts says the same (Debian includes sshd_config.d first, and the first value wins)."""
    data = yaml.safe_load(_render()["user-data"])
    assert "ssh_pwauth" not in data
    dropins = {f["path"]: f["content"] for f in data["write_files"] if f["path"].startswith("/etc/ssh/sshd_config.d/")}
    lines = dropins["/etc/ssh/sshd_config.d/50-stacklab-auth.conf"].splitlines()
    assert [line for line in lines if not line.startswith("#")] == ["PasswordAuthentication no"]


def test_user_data_content() -> None:
    files = _render()
    assert files["user-data"].startswith("#cloud-config\n")
    data = yaml.safe_load(files["user-data"])
    assert data["ssh_authorized_keys"] == [KEY]
    assert data["disable_root"] is False
    assert data["manage_etc_hosts"] is False
    assert data["locale"] == "C.UTF-8"
    assert data["hostname"] == "storage1"
    hosts = next(f for f in data["write_files"] if f["path"] == "/etc/hosts")["content"]
    assert "10.231.0.10 controller\n" in hosts and "10.231.0.12 compute1\n" in hosts
    assert "127.0.1.1" not in hosts  # the node's own name maps to its mgmt address
    meta = yaml.safe_load(files["meta-data"])
    assert meta["local-hostname"] == "storage1"


def test_network_config_matches_by_mac_and_routes_only_mgmt() -> None:
    net = yaml.safe_load(_render()["network-config"])
    assert net["version"] == 2
    eth0, eth1 = net["ethernets"]["eth0"], net["ethernets"]["eth1"]
    assert eth0["match"] == {"macaddress": "02:5c:00:00:00:11"}
    assert eth0["set-name"] == "eth0" and eth0["addresses"] == ["10.231.0.11/24"]
    assert eth0["gateway4"] == "10.231.0.1"
    assert eth1["mtu"] == 9000 and "gateway4" not in eth1


def test_default_route_follows_the_mgmt_network_not_the_order() -> None:
    spec = _spec(
        nics=[
            _nic(0, "storage", "10.232.0.11/24", "10.232.0.1", 9000),
            _nic(1, "mgmt", "10.231.0.11/24", "10.231.0.1", 1500),
        ]
    )
    net = yaml.safe_load(_render(node_spec=spec)["network-config"])
    assert "gateway4" not in net["ethernets"]["eth0"]
    assert net["ethernets"]["eth1"]["gateway4"] == "10.231.0.1"


def test_instance_id_is_stable_and_changes_with_the_spec() -> None:
    first = yaml.safe_load(_render()["meta-data"])["instance-id"]
    assert first == yaml.safe_load(_render()["meta-data"])["instance-id"]
    assert first.startswith("aio-storage1-")
    changed = _spec()
    changed["nics"][1]["mtu"] = 1500
    for variant in (
        _render(node_spec=changed),
        _render(public_key=KEY.replace("AAAAC3", "AAAAC4")),
        _render(hosts={**HOSTS, "compute2": "10.231.0.13"}),
        _render(lab_name="other"),
    ):
        assert yaml.safe_load(variant["meta-data"])["instance-id"] != first


def test_hostile_values_cannot_break_the_yaml() -> None:
    files = _render(public_key='ssh-ed25519 AAAA "quoted": comment # not-a-comment')
    assert yaml.safe_load(files["user-data"])["ssh_authorized_keys"] == [
        'ssh-ed25519 AAAA "quoted": comment # not-a-comment'
    ]


def test_nic_without_mac_is_an_error() -> None:
    spec = _spec()
    del spec["nics"][0]["mac"]
    with pytest.raises(SeedError, match="NIC 0 \\(mgmt\\) has no mac"):
        _render(node_spec=spec)


def test_validate_seed_rejects_bad_documents() -> None:
    good = _render()
    with pytest.raises(SeedError, match="#cloud-config"):
        validate_seed({**good, "user-data": "hostname: x\n"})
    with pytest.raises(SeedError, match="not valid YAML"):
        validate_seed({**good, "network-config": "version: [\n"})
    with pytest.raises(SeedError, match="instance-id"):
        validate_seed({**good, "meta-data": "local-hostname: x\n"})
    with pytest.raises(SeedError, match="lacks meta-data"):
        validate_seed({"user-data": good["user-data"], "network-config": good["network-config"]})


def test_broken_template_is_a_seed_error(tmp_path: Path) -> None:
    shutil.copytree(find_templates_dir(), tmp_path / "cloud-init")
    (tmp_path / "cloud-init" / "meta-data").write_text("instance-id: {{ no_such_value }}\n")
    with pytest.raises(SeedError, match="no_such_value"):
        _render(templates_dir=tmp_path / "cloud-init")


def test_templates_found_above_the_lab_dir(tmp_path: Path) -> None:
    shutil.copytree(find_templates_dir(), tmp_path / "cloud-init")
    (tmp_path / "labs" / "x").mkdir(parents=True)
    assert find_templates_dir(tmp_path / "labs" / "x") == tmp_path / "cloud-init"


def test_write_seed_dir(tmp_path: Path) -> None:
    dest = tmp_path / "upper" / seed_mod.NOCLOUD_SEED_DIR
    files = _render()
    write_seed_dir(files, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(SEED_FILES)
    for name in SEED_FILES:
        assert (dest / name).read_text() == files[name]
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o644
    write_seed_dir(_render(hosts={"storage1": "10.231.0.11"}), dest)  # overwrite in place
    assert "controller" not in (dest / "user-data").read_text()


def test_make_seed_iso_with_a_fake_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seed_mod, "iso_tool", lambda: "genisoimage")
    seen: list[list[str]] = []

    def fake(argv: tuple[str, ...]) -> Any:
        from stacklab.exec.runner import CommandResult

        output = Path(argv[argv.index("-output") + 1])
        seen.append(sorted(Path(a).name for a in argv if a.startswith("/") and Path(a).parent == output.parent))
        output.write_bytes(b"ISO")
        return CommandResult(argv, 0, "", "", 0.0)

    runner = FakeRunner().expect(["genisoimage"], responder=fake)
    dest = tmp_path / "vm" / "node.seed.iso"
    make_seed_iso(_render(), dest, runner)
    assert dest.read_bytes() == b"ISO"
    assert seen == [sorted([*SEED_FILES, "seed.iso"])]
    assert "-volid" in runner.calls[0] and "cidata" in runner.calls[0]
    assert [p.name for p in dest.parent.iterdir()] == ["node.seed.iso"]


def test_failed_iso_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seed_mod, "iso_tool", lambda: "genisoimage")
    runner = FakeRunner().expect(["genisoimage"], rc=1, stderr="boom")
    with pytest.raises(Exception, match="boom"):
        make_seed_iso(_render(), tmp_path / "n.iso", runner)
    assert list(tmp_path.iterdir()) == []


def test_xorriso_argv(tmp_path: Path) -> None:
    argv = iso_argv("xorriso", tmp_path / "o.iso", [tmp_path / "user-data"])
    assert argv[:3] == ["xorriso", "-as", "mkisofs"] and "-V" in argv and "cidata" in argv


@pytest.mark.skipif(
    seed_mod.iso_tool() is None or shutil.which("isoinfo") is None, reason="needs genisoimage/xorriso and isoinfo"
)
def test_real_iso_has_the_cidata_label_and_files(tmp_path: Path) -> None:
    dest = tmp_path / "seed.iso"
    files = _render()
    make_seed_iso(files, dest, LocalRunner())
    runner = LocalRunner()
    header = runner.run(["isoinfo", "-d", "-i", str(dest)], timeout=30).stdout
    assert "Volume id: cidata" in header
    listing = runner.run(["isoinfo", "-R", "-f", "-i", str(dest)], timeout=30).stdout.split()
    assert sorted(listing) == sorted(f"/{n}" for n in SEED_FILES)
    user_data = runner.run(["isoinfo", "-R", "-i", str(dest), "-x", "/user-data"], timeout=30).stdout
    assert user_data == files["user-data"]
