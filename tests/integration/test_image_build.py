"""Real image builds with mmdebstrap into a throwaway cache: the shipped base recipe, then a small derived one.

Needs root, mmdebstrap and a Debian mirror that answers (skipped with the reason otherwise); ~1-2 minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacklab.drivers.nodes.image import CLOUD_CFG_NAME, CacheEntry, ImageBuilder, entry_for
from stacklab.drivers.nodes.recipe import resolve_recipe
from stacklab.exec.fake import FakeRunner
from stacklab.exec.runner import LocalRunner

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow]

SHIPPED = Path(__file__).resolve().parents[2] / "images"


def _mirror_problem(mirror: str, suite: str) -> str | None:
    url = f"{mirror}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15) as reply:
            return None if reply.status == 200 else f"{url} answered {reply.status}"
    except OSError as exc:
        return f"no apt mirror answers ({url}: {exc})"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recipes") / "images"
    folder.mkdir()
    shutil.copy(SHIPPED / "debian-12-base.yml", folder / "debian-12-base.yml")
    (folder / "tiny.yml").write_text("base: debian-12-base\npackages: [rsync]\n")
    return folder


@pytest.fixture(scope="module")
def built(
    images: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ImageBuilder, CacheEntry, list[str]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (uid 0): mmdebstrap --mode=root")
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (apt-get install mmdebstrap)")
    recipe = resolve_recipe(images, "debian-12-base")
    problem = _mirror_problem(recipe.mirror, recipe.suite)
    if problem:
        pytest.skip(problem)
    cache = tmp_path_factory.mktemp("image-cache")
    messages: list[str] = []
    builder = ImageBuilder(LocalRunner(), cache, progress=messages.append)
    entry = builder.ensure(recipe)
    yield builder, entry, messages
    shutil.rmtree(cache, ignore_errors=True)


def test_base_rootfs_has_what_nodes_need(built: tuple[ImageBuilder, CacheEntry, list[str]]) -> None:
    _, entry, messages = built
    rootfs = entry.rootfs
    assert (rootfs / "lib/systemd/systemd").exists() or (rootfs / "usr/lib/systemd/systemd").exists()
    assert (rootfs / "sbin/init").exists() or (rootfs / "sbin/init").is_symlink()
    assert (rootfs / "usr/sbin/sshd").exists()
    assert (rootfs / "usr/bin/cloud-init").exists()
    assert list((rootfs / "boot").glob("vmlinuz-*")) and list((rootfs / "boot").glob("initrd.img-*"))
    assert not list((rootfs / "etc/ssh").glob("ssh_host_*"))
    assert (rootfs / "etc/machine-id").read_text() == ""
    assert "NoCloud" in (rootfs / "etc/cloud/cloud.cfg.d" / CLOUD_CFG_NAME).read_text()
    assert not (rootfs / "usr/sbin/policy-rc.d").exists()
    manifest = json.loads(entry.manifest.read_text())
    assert manifest["hash"] == entry.hash and manifest["chain"] == ["debian-12-base"]
    assert manifest["size_bytes"] > 100 * 2**20 and manifest["installed_packages"] > 100
    assert any("built in" in m for m in messages)
    leftovers = [p.name for p in entry.root.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_second_build_is_a_cache_hit(built: tuple[ImageBuilder, CacheEntry, list[str]], images: Path) -> None:
    builder, entry, _ = built
    runner = FakeRunner()  # any command would fail the test
    start = time.monotonic()
    again = ImageBuilder(runner, builder.cache).ensure(resolve_recipe(images, "debian-12-base"))
    assert again == entry and runner.calls == []
    assert time.monotonic() - start < 2


def test_derived_image_builds_on_the_cached_parent(
    built: tuple[ImageBuilder, CacheEntry, list[str]], images: Path
) -> None:
    builder, base, _ = built
    recipe = resolve_recipe(images, "tiny")
    entry = builder.ensure(recipe)
    assert entry == entry_for(recipe, builder.cache)
    assert (entry.rootfs / "usr/bin/rsync").exists()
    assert not (base.rootfs / "usr/bin/rsync").exists()  # the parent is untouched
    assert not list((entry.rootfs / "etc/ssh").glob("ssh_host_*"))
    assert not (entry.rootfs / "usr/sbin/policy-rc.d").exists()
    manifest = json.loads(entry.manifest.read_text())
    assert manifest["method"].startswith("derived from debian-12-base-")
    mounts = Path("/proc/self/mounts").read_text()
    assert str(builder.cache) not in mounts  # the chroot's mounts lived in a private namespace
