"""Image recipes: chain resolution, validation, the content hash, and the image driver's plan decisions."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.nodes import image as image_mod
from stacklab.drivers.nodes import recipe as recipe_mod
from stacklab.drivers.nodes.image import CLOUD_CFG_NAME, CacheEntry, ImageBuilder, ImageDriver, entry_for, generalise
from stacklab.drivers.nodes.recipe import BUILDER_VERSION, RecipeError, recipe_hash, resolve_recipe
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import CommandError, CommandResult
from stacklab.plan.resource import Action, Resource

ROOT_RECIPE = (
    "distro: debian\nsuite: bookworm\nvariant: minbase\npackages: [systemd-sysv, openssh-server, cloud-init]\n"
)


def _images(tmp_path: Path, **recipes: str) -> Path:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for name, text in recipes.items():
        (folder / f"{name}.yml").write_text(text)
    return folder


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return _images(
        tmp_path,
        base=ROOT_RECIPE,
        storage="base: base\npackages: [tgt, ceph-mon, openssh-server]\n",
        openstack="base: storage\npackages: [keystone, glance]\n",
    )


def test_chain_accumulates_packages_and_takes_settings_from_the_root(images: Path) -> None:
    recipe = resolve_recipe(images, "openstack")
    assert recipe.chain == ("base", "storage", "openstack")
    assert recipe.packages == (
        "systemd-sysv",
        "openssh-server",
        "cloud-init",
        "tgt",
        "ceph-mon",
        "keystone",
        "glance",
    )
    assert recipe.own_packages == ("keystone", "glance")
    assert (recipe.distro, recipe.suite, recipe.variant) == ("debian", "bookworm", "minbase")
    assert recipe.parent is not None and recipe.parent.name == "storage"
    assert recipe.parent.parent is not None and recipe.parent.parent.parent is None


def test_apt_sources_are_full_lines(images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACKLAB_DEBIAN_MIRROR", raising=False)
    assert resolve_recipe(images, "base").apt_sources == (
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    )


def test_hash_is_stable_and_ignores_package_order(images: Path, tmp_path: Path) -> None:
    first = recipe_hash(resolve_recipe(images, "openstack"))
    assert first == recipe_hash(resolve_recipe(images, "openstack"))
    assert len(first) == 16
    (images / "openstack.yml").write_text("base: storage\npackages: [glance, keystone]\n")
    assert recipe_hash(resolve_recipe(images, "openstack")) == first


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("base", ROOT_RECIPE.replace("cloud-init]", "cloud-init, curl]")),
        ("base", ROOT_RECIPE.replace("bookworm", "trixie")),
        ("storage", "base: base\npackages: [tgt]\n"),
        ("openstack", "base: storage\npackages: [keystone, glance, nova-api]\n"),
    ],
)
def test_editing_any_recipe_in_the_chain_changes_the_hash(images: Path, name: str, text: str) -> None:
    before = recipe_hash(resolve_recipe(images, "openstack"))
    (images / f"{name}.yml").write_text(text)
    assert recipe_hash(resolve_recipe(images, "openstack")) != before


def test_editing_a_derived_recipe_keeps_the_parent_hash(images: Path) -> None:
    base_before = recipe_hash(resolve_recipe(images, "base"))
    (images / "storage.yml").write_text("base: base\npackages: [tgt, nfs-ganesha]\n")
    assert recipe_hash(resolve_recipe(images, "base")) == base_before


def test_builder_version_is_part_of_the_hash(images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = recipe_hash(resolve_recipe(images, "base"))
    monkeypatch.setattr(recipe_mod, "BUILDER_VERSION", BUILDER_VERSION + "-next")
    assert recipe_hash(resolve_recipe(images, "base")) != before


def test_mirror_from_environment(images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = recipe_hash(resolve_recipe(images, "base"))
    monkeypatch.setenv("STACKLAB_DEBIAN_MIRROR", "http://mirror.example/debian/")
    recipe = resolve_recipe(images, "base")
    assert recipe.mirror == "http://mirror.example/debian"
    assert recipe_hash(recipe) != before


@pytest.mark.parametrize(
    ("recipes", "message"),
    [
        ({}, "image recipe 'base' not found"),
        ({"base": "base: other\npackages: []\n", "other": "base: base\n"}, "cycle: base -> other -> base"),
        ({"base": "distro: ubuntu\nsuite: noble\n"}, "distro 'ubuntu' is not supported"),
        ({"base": "distro: debian\n"}, "suite is required"),
        ({"base": "distro: debian\nsuite: bookworm\nvariant: huge\n"}, "variant 'huge'"),
        ({"base": "distro: debian\nsuite: bookworm\npackages: vim\n"}, "packages must be a list"),
        ({"base": "distro: debian\nsuite: bookworm\npackage: [vim]\n"}, "unexpected keys: package"),
        ({"base": "base: root\nsuite: trixie\n", "root": ROOT_RECIPE}, "only adds packages"),
        ({"base": "- a\n- b\n"}, "a recipe is a mapping"),
        ({"base": "distro: [\n"}, "not valid YAML"),
    ],
)
def test_recipe_errors_name_the_file_and_cause(tmp_path: Path, recipes: dict[str, str], message: str) -> None:
    folder = _images(tmp_path, **recipes)
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        resolve_recipe(folder, "base")


def test_the_shipped_recipes_resolve() -> None:
    images = Path(__file__).resolve().parents[2] / "images"
    zed = resolve_recipe(images, "openstack-zed")
    assert zed.chain == ("debian-12-base", "storage", "openstack-zed")
    for needed in ("systemd-sysv", "openssh-server", "cloud-init", "dbus", "linux-image-cloud-amd64", "keystone"):
        assert needed in zed.packages


def test_generalise_strips_host_identity(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    for rel, text in {
        "etc/ssh/ssh_host_ed25519_key": "secret",
        "etc/ssh/ssh_host_ed25519_key.pub": "pub",
        "etc/ssh/sshd_config": "keep",
        "etc/machine-id": "0123456789abcdef\n",
        "var/lib/dbus/machine-id": "0123456789abcdef\n",
        "etc/hostname": "buildhost\n",
        "etc/resolv.conf": "nameserver 10.0.0.53\n",
        "var/lib/apt/lists/deb.debian.org_Release": "x",
        "var/cache/apt/archives/foo.deb": "x",
    }.items():
        (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / rel).write_text(text)
    (rootfs / "etc/cloud/cloud.cfg.d").mkdir(parents=True)
    generalise(rootfs)
    assert sorted(p.name for p in (rootfs / "etc/ssh").iterdir()) == ["sshd_config"]
    assert (rootfs / "etc/machine-id").read_text() == ""
    assert (rootfs / "var/lib/dbus/machine-id").readlink() == Path("/etc/machine-id")
    assert (rootfs / "etc/hostname").read_text() == "localhost\n"
    assert (rootfs / "etc/resolv.conf").read_text() == ""
    assert "datasource_list: [ NoCloud, None ]" in (rootfs / "etc/cloud/cloud.cfg.d" / CLOUD_CFG_NAME).read_text()
    assert not list((rootfs / "var/lib/apt/lists").iterdir())
    assert not list((rootfs / "var/cache/apt/archives").iterdir())


# ----------------------------------------------------------------------------------------------------
# Cache entries and the driver's observe/diff


def _complete(entry: CacheEntry) -> None:
    entry.rootfs.mkdir(parents=True)
    entry.manifest.write_text(json.dumps({"hash": entry.hash}))


def _ctx(tmp_path: Path, images: Path, outputs: dict[str, Any] | None = None) -> DriverContext:
    lab = SimpleNamespace(name="t", source=str(images.parent / "lab.yml"))
    return DriverContext(lab=lab, runner=FakeRunner(), state_dir=tmp_path / "state", outputs=outputs or {})  # type: ignore[arg-type]


def test_manifest_must_name_the_hash(tmp_path: Path) -> None:
    entry = CacheEntry("base", "0123456789abcdef", tmp_path)
    assert entry.read_manifest() is None
    entry.rootfs.mkdir(parents=True)
    entry.manifest.write_text(json.dumps({"hash": "ffffffffffffffff"}))
    assert entry.read_manifest() is None
    entry.manifest.write_text(json.dumps({"hash": entry.hash}))
    assert entry.read_manifest() == {"hash": entry.hash}


def test_observe_and_diff(tmp_path: Path, images: Path) -> None:
    cache = tmp_path / "cache"
    driver = ImageDriver(cache=cache)
    resource = Resource("image", "storage", {"recipe": "storage"})
    ctx = _ctx(tmp_path, images)
    assert driver.observe(resource, ctx) is None
    assert driver.diff(resource, None, None).action is Action.CREATE

    entry = entry_for(resolve_recipe(images, "storage"), cache)
    _complete(entry)
    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.facts == {"rootfs": str(entry.rootfs), "hash": entry.hash}
    recorded = {"hash": resource.hash, "spec": dict(resource.spec), "outputs": entry.outputs()}
    assert driver.diff(resource, observed, recorded).action is Action.NOOP

    # The recipe file changes: the spec (recipe name) is the same, the observation reports the new hash.
    (images / "storage.yml").write_text("base: base\npackages: [tgt, nfs-ganesha]\n")
    ctx = _ctx(tmp_path, images, {"image/storage": entry.outputs()})
    observed = driver.observe(resource, ctx)
    assert observed is not None and observed.drift
    assert "recipe hash" in observed.drift[0]
    change = driver.diff(resource, observed, recorded)
    assert change.action is Action.UPDATE


def test_delete_keeps_the_shared_cache(tmp_path: Path, images: Path) -> None:
    cache = tmp_path / "cache"
    entry = entry_for(resolve_recipe(images, "base"), cache)
    _complete(entry)
    ImageDriver(cache=cache).delete("image/base", {"outputs": entry.outputs()}, _ctx(tmp_path, images))
    assert entry.read_manifest() is not None


def test_builder_cache_hit_runs_nothing(tmp_path: Path, images: Path) -> None:
    runner = FakeRunner()
    recipe = resolve_recipe(images, "openstack")
    entry = entry_for(recipe, tmp_path)
    _complete(entry)
    assert ImageBuilder(runner, tmp_path).ensure(recipe) == entry
    assert runner.calls == []


def test_failed_build_leaves_nothing(tmp_path: Path, images: Path) -> None:
    runner = FakeRunner().expect(["mmdebstrap"], rc=1, stderr="E: cannot reach mirror")
    recipe = resolve_recipe(images, "base")
    cache = tmp_path / "cache"
    with pytest.raises(CommandError, match="cannot reach mirror"):
        ImageBuilder(runner, cache).ensure(recipe)
    leftovers = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_derived_build_copies_the_parent_and_installs_only_its_packages(tmp_path: Path, images: Path) -> None:
    recipe = resolve_recipe(images, "storage")
    parent = entry_for(recipe.parent, tmp_path)  # type: ignore[arg-type]
    _complete(parent)

    def copy(argv: tuple[str, ...]) -> CommandResult:
        Path(argv[-1]).mkdir(parents=True)
        (Path(argv[-1]) / "etc").mkdir()
        (Path(argv[-1]) / "usr/sbin").mkdir(parents=True)
        return CommandResult(argv, 0, "", "", 0.0)

    runner = FakeRunner().expect(["cp", "-a", "--reflink=auto"], responder=copy).expect(["unshare"])
    entry = ImageBuilder(runner, tmp_path).ensure(recipe)
    manifest = entry.read_manifest()
    assert manifest is not None and manifest["chain"] == ["base", "storage"]
    installs = [c for c in runner.calls if "install" in c]
    assert len(installs) == 1
    assert installs[0][-2:] == ("tgt", "ceph-mon")  # openssh-server comes with the parent
    assert "--pid" in installs[0] and "chroot" in " ".join(installs[0])
    assert not (entry.rootfs / "usr/sbin/policy-rc.d").exists()


def test_services_policy_is_part_of_the_hash_and_validated(images: Path) -> None:
    before = recipe_hash(resolve_recipe(images, "storage"))
    assert resolve_recipe(images, "storage").services == "disabled"
    (images / "storage.yml").write_text("base: base\nservices: enabled\npackages: [tgt, ceph-mon, openssh-server]\n")
    assert resolve_recipe(images, "storage").services == "enabled"
    assert recipe_hash(resolve_recipe(images, "storage")) != before
    (images / "storage.yml").write_text("base: base\nservices: sometimes\n")
    with pytest.raises(RecipeError, match="services must be one of disabled, enabled"):
        resolve_recipe(images, "storage")


def test_disable_new_units_removes_only_what_the_packages_enabled(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    sockets = rootfs / "etc/systemd/system/sockets.target.wants"
    rc2 = rootfs / "etc/rc2.d"
    for folder in (wants, sockets, rc2):
        folder.mkdir(parents=True)
    (wants / "ssh.service").symlink_to("/lib/systemd/system/ssh.service")
    before = image_mod.enabled_links(rootfs)
    (wants / "mariadb.service").symlink_to("/lib/systemd/system/mariadb.service")
    (sockets / "libvirtd.socket").symlink_to("/lib/systemd/system/libvirtd.socket")
    (rc2 / "S01legacyd").symlink_to("../init.d/legacyd")
    assert image_mod.disable_new_units(rootfs, before) == ["legacyd (sysv)", "libvirtd.socket", "mariadb.service"]
    assert sorted(p.name for p in wants.iterdir()) == ["ssh.service"]
    assert not list(sockets.iterdir())
    # sysv scripts keep a stop link (update-rc.d's `disable`), so `systemctl enable` can turn them back on
    assert [(p.name, str(p.readlink())) for p in rc2.iterdir()] == [("K01legacyd", "../init.d/legacyd")]
