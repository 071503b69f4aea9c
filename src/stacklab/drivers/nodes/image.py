"""The `image` resource: root filesystems built from images/ recipes with mmdebstrap, cached by content hash.

A recipe is a YAML file `images/<name>.yml`, found in the lab's tree, the user's ~/.config/stacklab/images/ or
the built-in recipes, in that order (model.paths; `stacklab recipes` lists them). A root recipe names `distro`,
`suite`, `variant` (default minbase) and `packages`; a derived recipe names `base: <other recipe>`, adds
`packages`, and with `services: disabled` (the default) removes the boot-time enablement of the units its
packages enabled (listed in the manifest as `disabled_units`): nodes boot without unconfigured daemons, and the
service steps enable what each node runs.
The resolved chain (root first) plus BUILDER_VERSION is hashed; the hash names the cache entry, so editing a
recipe (or the build steps) builds a new entry and an unchanged recipe is a cache hit whichever lab asks for it.

`delete` never removes a cached rootfs: the cache is shared between labs (and is the lower layer of their
containers). Old entries are removed by hand.

Cache layout (shared by every lab on the host; STACKLAB_IMAGE_CACHE overrides the root)::

    /var/cache/stacklab/images/<name>-<hash>/rootfs          the root filesystem (container lower layer, VM disk source)
    /var/cache/stacklab/images/<name>-<hash>/manifest.json   recipe chain, packages, hash, build time, size
    /var/cache/stacklab/images/<name>-<hash>.lock            flock held while building

A build happens in `.<name>-<hash>.tmp-*` beside the entry and is renamed into place only when complete, so an
interrupted build never leaves a directory that looks done; stale temp directories are removed by the next build.

Root recipes are built with one mmdebstrap run. Derived recipes start from a reflink/hard copy of the parent's
cached rootfs (`cp -a --reflink=auto`) and install their own packages with apt-get inside a chroot that runs in
private mount and PID namespaces (`unshare`), with a policy-rc.d that starts no daemon; nothing stays mounted
on the host and no process outlives the build. Every image is then generalised: no SSH host keys, an empty
machine-id, cloud-init limited to the NoCloud datasource, apt caches and lists removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stacklab.drivers.base import BaseDriver, Driver, DriverContext, register
from stacklab.drivers.nodes.boot_trim import mask_units, write_cloud_modules
from stacklab.drivers.nodes.recipe import BUILDER_VERSION, Recipe, RecipeError, recipe_hash, resolve_recipe
from stacklab.exec.atomic import write_atomic
from stacklab.exec.filelock import file_lock
from stacklab.exec.runner import Runner
from stacklab.model.paths import recipe_dirs
from stacklab.plan.resource import Change, Observed, Resource

LOG = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/var/cache/stacklab/images")
CACHE_ENV = "STACKLAB_IMAGE_CACHE"
MANIFEST = "manifest.json"
ROOTFS = "rootfs"
BUILD_TIMEOUT = 1800.0
PROGRESS_INTERVAL = 15.0
CLOUD_CFG_NAME = "90-stacklab-datasource.cfg"
CLOUD_CFG = (
    "# written by stacklab: nodes get their seed from a NoCloud directory or a cidata disk\n"
    "datasource_list: [ NoCloud, None ]\n"
)
POLICY_RC_D = "#!/bin/sh\n# written by stacklab while building the image: start no daemon\nexit 101\n"

# Shell run by unshare: mount what package scripts expect inside the private namespace, then chroot.
# The rootfs comes in as $1, the command as the remaining arguments (nothing is formatted into the script).
_CHROOT_SCRIPT = (
    'root="$1"; shift; '
    'mount -t proc proc "$root/proc"; '
    'mount -t sysfs sysfs "$root/sys"; '
    'mount --rbind /dev "$root/dev"; '
    'mount -t tmpfs tmpfs "$root/run"; '
    'exec chroot "$root" "$@"'
)
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


# ----------------------------------------------------------------------------------------------------
# The cache


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


@dataclass(frozen=True)
class CacheEntry:
    name: str
    hash: str
    root: Path  # the cache root directory

    @property
    def directory(self) -> Path:
        return self.root / f"{self.name}-{self.hash}"

    @property
    def rootfs(self) -> Path:
        return self.directory / ROOTFS

    @property
    def manifest(self) -> Path:
        return self.directory / MANIFEST

    @property
    def lock(self) -> Path:
        return self.root / f"{self.name}-{self.hash}.lock"

    @property
    def tmp_prefix(self) -> str:
        return f".{self.name}-{self.hash}.tmp-"

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest if this entry is complete (manifest names this hash and the rootfs exists)."""
        try:
            data = json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("hash") != self.hash or not self.rootfs.is_dir():
            return None
        return data

    def outputs(self) -> dict[str, str]:
        return {"rootfs": str(self.rootfs), "hash": self.hash, "manifest": str(self.manifest)}


def entry_for(recipe: Recipe, root: Path | None = None) -> CacheEntry:
    return CacheEntry(recipe.name, recipe_hash(recipe), root or cache_root())


def _tree_size(path: Path) -> int:
    """Bytes used by a tree (hard links counted once), without following symlinks."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


def _installed_count(rootfs: Path) -> int:
    try:
        text = (rootfs / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return 0
    return text.count("Status: install ok installed")


# ----------------------------------------------------------------------------------------------------
# Building


@dataclass
class ImageBuilder:
    """Builds recipes into the cache through a Runner; `progress` gets a line every PROGRESS_INTERVAL seconds."""

    runner: Runner
    cache: Path
    progress: Callable[[str], None] = lambda _msg: None
    timeout: float = BUILD_TIMEOUT
    # Units the last derived build disabled (recorded in its manifest).
    disabled_units: list[str] = field(default_factory=list)

    def ensure(self, recipe: Recipe) -> CacheEntry:
        """The complete cache entry for `recipe`, building it (and its parents) if missing."""
        entry = entry_for(recipe, self.cache)
        if entry.read_manifest() is not None:
            LOG.debug("image %s: cache hit %s", recipe.name, entry.directory)
            return entry
        parent_entry = self.ensure(recipe.parent) if recipe.parent is not None else None
        with file_lock(entry.lock):
            if entry.read_manifest() is not None:  # another lab built it while we waited
                return entry
            self._clean_stale(entry)
            self._build(recipe, entry, parent_entry)
        return entry

    def _clean_stale(self, entry: CacheEntry) -> None:
        for stale in entry.root.glob(f"{entry.tmp_prefix}*"):
            LOG.info("removing the remains of an interrupted image build: %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if entry.directory.exists():  # complete-looking but without a valid manifest: not ours to trust
            LOG.info("removing incomplete image cache entry %s", entry.directory)
            shutil.rmtree(entry.directory, ignore_errors=True)

    def _build(self, recipe: Recipe, entry: CacheEntry, parent: CacheEntry | None) -> None:
        entry.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=entry.tmp_prefix, dir=entry.root))
        rootfs = tmp / ROOTFS
        start = time.monotonic()
        self.disabled_units = []
        try:
            if parent is None:
                method = "mmdebstrap"
                self._watch(recipe.name, rootfs, start, lambda: self._mmdebstrap(recipe, rootfs))
            else:
                method = f"derived from {parent.name}-{parent.hash}"
                self.progress(f"image {recipe.name}: copying {parent.name} rootfs")
                self.runner.run(["cp", "-a", "--reflink=auto", str(parent.rootfs), str(rootfs)], timeout=self.timeout)
                self._watch(recipe.name, rootfs, start, lambda: self._apt_install(recipe, rootfs))
            generalise(rootfs)
            duration = time.monotonic() - start
            size = _tree_size(rootfs)
            manifest: dict[str, Any] = {
                "name": recipe.name,
                "hash": entry.hash,
                "builder": BUILDER_VERSION,
                "chain": list(recipe.chain),
                "recipe": recipe.canonical(),
                "packages": list(recipe.packages),
                "installed_packages": _installed_count(rootfs),
                "method": method,
                "disabled_units": list(self.disabled_units),
                "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "build_seconds": round(duration, 1),
                "size_bytes": size,
            }
            write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            os.chmod(tmp, 0o755)
            os.rename(tmp, entry.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        LOG.info(
            "image %s built in %.0fs (%s): %s, %d MiB",
            recipe.name,
            duration,
            method,
            entry.directory,
            size // 2**20,
        )
        self.progress(f"image {recipe.name}: built in {duration:.0f}s, {manifest['size_bytes'] // 2**20} MiB")

    def _watch(self, name: str, rootfs: Path, start: float, work: Callable[[], None]) -> None:
        """Run `work` in a thread; meanwhile report the packages installed so far every PROGRESS_INTERVAL."""
        failure: list[BaseException] = []

        def target() -> None:
            try:
                work()
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=target, name=f"image-build-{name}", daemon=True)
        thread.start()
        while True:
            thread.join(PROGRESS_INTERVAL)
            if not thread.is_alive():
                break
            elapsed = time.monotonic() - start
            self.progress(
                f"image {name}: building, {_installed_count(rootfs)} packages installed, {elapsed:.0f}s "
                f"(budget {max(0.0, self.timeout - elapsed):.0f}s)"  # what is left of the command's timeout
            )
        if failure:
            raise failure[0]

    def _mmdebstrap(self, recipe: Recipe, rootfs: Path) -> None:
        self.progress(
            f"image {recipe.name}: mmdebstrap {recipe.suite} ({len(recipe.packages)} packages requested, "
            f"budget {self.timeout:g}s)"
        )
        argv = [
            "mmdebstrap",
            "--mode=root",
            f"--variant={recipe.variant}",
            f"--components={','.join(recipe.components)}",
            "--aptopt=APT::Install-Recommends false",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        ]
        if recipe.packages:
            argv.append(f"--include={','.join(recipe.packages)}")
        argv += [recipe.suite, str(rootfs), *recipe.apt_sources]
        result = self.runner.run(argv, timeout=self.timeout, env=_APT_ENV)
        LOG.debug("mmdebstrap: %s", result.stderr.strip().splitlines()[-1:] if result.stderr else "")

    def _apt_install(self, recipe: Recipe, rootfs: Path) -> None:
        before = enabled_links(rootfs)
        self._apt_install_packages(recipe, rootfs)
        if recipe.services == "disabled":
            self.disabled_units = disable_new_units(rootfs, before)
            if self.disabled_units:
                LOG.info("image %s: disabled at boot: %s", recipe.name, ", ".join(self.disabled_units))

    def _apt_install_packages(self, recipe: Recipe, rootfs: Path) -> None:
        new = [p for p in recipe.own_packages if p not in (recipe.parent.packages if recipe.parent else ())]
        policy = rootfs / "usr/sbin/policy-rc.d"
        resolv = rootfs / "etc/resolv.conf"
        resolv_backup: bytes | None = None
        policy.write_text(POLICY_RC_D)
        policy.chmod(0o755)
        if resolv.is_file() or resolv.is_symlink():
            with contextlib.suppress(OSError):
                resolv_backup = resolv.read_bytes()
            resolv.unlink()
        shutil.copyfile("/etc/resolv.conf", resolv)
        try:
            parent = recipe.parent.name if recipe.parent else "?"
            self.progress(f"image {recipe.name}: apt-get install {len(new)} packages on {parent}")
            self._chroot(rootfs, ["apt-get", "-q", "update"])
            if new:
                self._chroot(
                    rootfs,
                    [
                        "apt-get",
                        "-q",
                        "-y",
                        "--no-install-recommends",
                        "-o",
                        "Dpkg::Options::=--force-confdef",
                        "-o",
                        "Dpkg::Options::=--force-confold",
                        "install",
                        *new,
                    ],
                )
            self._chroot(rootfs, ["apt-get", "clean"])
        finally:
            policy.unlink(missing_ok=True)
            resolv.unlink(missing_ok=True)
            if resolv_backup is not None:
                resolv.write_bytes(resolv_backup)

    def _chroot(self, rootfs: Path, argv: list[str]) -> None:
        self.runner.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
                "--",
                "sh",
                "-euc",
                _CHROOT_SCRIPT,
                "sh",
                str(rootfs),
                *argv,
            ],
            timeout=self.timeout,
            env=_APT_ENV,
        )


# Where package scripts enable units (systemd wants/requires links) and sysv init scripts (rcN.d start links,
# which systemd's sysv generator turns into enabled units).
_ENABLE_GLOBS = ("etc/systemd/system/*.wants/*", "etc/systemd/system/*.requires/*", "etc/rc[2-5].d/S*")


def enabled_links(rootfs: Path) -> set[str]:
    """Relative paths of the symlinks that enable units at boot."""
    return {str(p.relative_to(rootfs)) for pattern in _ENABLE_GLOBS for p in rootfs.glob(pattern) if p.is_symlink()}


def disable_new_units(rootfs: Path, before: set[str]) -> list[str]:
    """Remove the enablement links that appeared since `before`; returns the unit names disabled (sorted)."""
    units = set()
    for rel in sorted(enabled_links(rootfs) - before):
        path = rootfs / rel
        name = path.name
        if path.parent.name.startswith("rc"):
            # What `update-rc.d NAME disable` does: S01foo -> K01foo. Dropping the link instead would leave the
            # script with no runlevel links, and a later `systemctl enable` (update-rc.d enable) then fails.
            path.rename(path.with_name("K" + name[1:]))
            name = name[3:] + " (sysv)"  # S01foo -> foo
        else:
            path.unlink()
        units.add(name)
    return sorted(units)


def generalise(rootfs: Path) -> None:
    """Make the rootfs a template: every node gets its own host keys and machine-id; cloud-init reads NoCloud;
    the boot leaves out what no node needs (boot_trim)."""
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    machine_id = rootfs / "etc/machine-id"
    machine_id.unlink(missing_ok=True)
    machine_id.write_text("")  # empty: systemd generates one at first boot
    machine_id.chmod(0o444)
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")
    cloud_cfg = rootfs / "etc/cloud/cloud.cfg.d"
    if cloud_cfg.is_dir():
        (cloud_cfg / CLOUD_CFG_NAME).write_text(CLOUD_CFG)
    # A node's boot is on the critical path of `up` and of every checkpoint restart: leave out what no node uses.
    write_cloud_modules(rootfs)
    mask_units(rootfs)
    for folder in (rootfs / "var/lib/apt/lists", rootfs / "var/cache/apt/archives"):
        if folder.is_dir():
            for item in folder.iterdir():
                if item.is_file() and item.name != "lock":
                    item.unlink()
    # mmdebstrap copies the build host's hostname and resolv.conf; nodes get theirs from cloud-init (no DNS in labs).
    for name, content in (("etc/hostname", "localhost\n"), ("etc/resolv.conf", "")):
        path = rootfs / name
        if path.is_symlink():
            continue
        path.unlink(missing_ok=True)
        path.write_text(content)
        path.chmod(0o644)


# ----------------------------------------------------------------------------------------------------
# The driver


def images_dir_for(ctx: DriverContext) -> list[Path]:
    """The lab's recipe search path: images/ beside or above its file, the user's, the built-in recipes."""
    return recipe_dirs(ctx.lab_file_dir)


def current_entry(ctx: DriverContext, image_name: str) -> CacheEntry | None:
    """The cache entry the lab's image `image_name` resolves to from its recipe files now (built or not).

    Nodes compare it with what they were made from, so a recipe edit replaces them in the same `up` that
    rebuilds the image (the image's recorded outputs still name the old build until its step runs).
    None when the lab has no such image or its recipe cannot be read (the image step reports that).
    """
    image = getattr(ctx.lab, "images", {}).get(image_name)
    if image is None:
        return None
    try:
        return entry_for(resolve_recipe(images_dir_for(ctx), str(image.recipe)))
    except RecipeError:
        return None


class ImageDriver(BaseDriver):
    """Image recipes built into the host-wide cache.

    `delete` forgets the image for this lab and deletes nothing: the cached rootfs is shared between labs (and
    is the lower layer of running containers). Remove old entries under the cache root by hand
    (`/var/cache/stacklab/images` or $STACKLAB_IMAGE_CACHE).
    If a build fails, its temporary directory is removed and the cache holds nothing for that hash.
    """

    kind = "image"

    def __init__(self, cache: Path | None = None) -> None:
        self._cache = cache

    def _recipe(self, resource: Resource, ctx: DriverContext) -> Recipe:
        return resolve_recipe(images_dir_for(ctx), str(resource.spec["recipe"]))

    def observe(self, resource: Resource, ctx: DriverContext) -> Observed | None:
        recipe = self._recipe(resource, ctx)
        entry = entry_for(recipe, self._cache)
        recorded_hash = _recorded_hash(ctx, resource.id)
        if entry.read_manifest() is not None:
            # Built (perhaps by another lab) but this lab recorded another hash: update so nodes get the new rootfs.
            drift = () if recorded_hash in (None, entry.hash) else (f"recipe hash {recorded_hash} -> {entry.hash}",)
            return Observed(owned=True, facts={"rootfs": str(entry.rootfs), "hash": entry.hash}, drift=drift)
        # Is an older build of this image recorded for the lab? Then the recipe changed: a rebuild, with a reason.
        if recorded_hash is not None and recorded_hash != entry.hash:
            old = CacheEntry(recipe.name, recorded_hash, entry.root)
            if old.read_manifest() is not None:
                return Observed(
                    owned=True,
                    facts={"rootfs": str(old.rootfs), "hash": recorded_hash},
                    drift=(f"recipe hash {recorded_hash} -> {entry.hash} (recipe or builder changed)",),
                )
        return None

    def apply(self, change: Change, ctx: DriverContext) -> Mapping[str, Any]:
        recipe = resolve_recipe(images_dir_for(ctx), str(change.resource.spec["recipe"]))
        builder = ImageBuilder(ctx.runner, self._cache or cache_root(), progress=ctx.progress)
        return builder.ensure(recipe).outputs()

    def delete(self, resource_id: str, recorded: Mapping[str, Any], ctx: DriverContext) -> None:
        LOG.info("%s: the cached rootfs is shared between labs and stays in %s", resource_id, cache_root())


def _recorded_hash(ctx: DriverContext, resource_id: str) -> str | None:
    outputs = ctx.outputs.get(resource_id)
    value = outputs.get("hash") if outputs else None
    return str(value) if value else None


@register("image")
def _factory() -> Driver:
    return ImageDriver()
