"""Image recipes: a YAML file names a Debian suite and packages (a root) or a base recipe and more packages (a derived
recipe); resolve_recipe loads a chain into one Recipe, and its content hash names the image's cache entry."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stacklab.errors import PlanError
from stacklab.model.paths import describe_dirs, find_recipe

# Bump when the build steps change in a way that changes the produced rootfs: every image is rebuilt.
BUILDER_VERSION = "3"  # 2: sysv start links become K links, not removed; 3: boot_trim (masked units, modules)


MIRROR_ENV = "STACKLAB_DEBIAN_MIRROR"


DEFAULT_MIRRORS = {
    "debian": ("http://deb.debian.org/debian", "http://deb.debian.org/debian-security"),
}


_ROOT_KEYS = frozenset({"distro", "suite", "variant", "packages", "mirror", "security_mirror", "components"})


_DERIVED_KEYS = frozenset({"base", "packages", "services"})


_SERVICE_POLICIES = frozenset({"disabled", "enabled"})


_VARIANTS = frozenset({"minbase", "essential", "apt", "required", "important", "standard"})


class RecipeError(PlanError):
    """A recipe file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Recipe:
    """A resolved recipe: the root's distro settings and the packages of the whole chain."""

    name: str
    distro: str
    suite: str
    variant: str
    mirror: str
    security_mirror: str
    components: tuple[str, ...]
    # Packages this recipe adds (its own file), and of the whole chain (root first, deduplicated).
    own_packages: tuple[str, ...]
    packages: tuple[str, ...]
    # Names from the root to this recipe, e.g. ("debian-12-base", "storage").
    chain: tuple[str, ...]
    parent: Recipe | None = None
    # Derived recipes: "disabled" (default) removes the boot-time enablement of every unit this level's packages
    # enabled, so nodes boot without unconfigured daemons and the service steps enable what each node runs.
    services: str = "disabled"

    @property
    def apt_sources(self) -> tuple[str, ...]:
        """One-line apt sources for the build and for the image (full lines: a bare security URL fails)."""
        comps = " ".join(self.components)
        return (
            f"deb {self.mirror} {self.suite} {comps}",
            f"deb {self.mirror} {self.suite}-updates {comps}",
            f"deb {self.security_mirror} {self.suite}-security {comps}",
        )

    def canonical(self) -> dict[str, Any]:
        """What the hash covers: the build settings and every level's own (sorted) packages."""
        levels = []
        recipe: Recipe | None = self
        while recipe is not None:
            level: dict[str, Any] = {"name": recipe.name, "packages": sorted(set(recipe.own_packages))}
            if recipe.parent is not None:
                level["services"] = recipe.services
            levels.append(level)
            recipe = recipe.parent
        return {
            "builder": BUILDER_VERSION,
            "distro": self.distro,
            "suite": self.suite,
            "variant": self.variant,
            "mirror": self.mirror,
            "security_mirror": self.security_mirror,
            "components": list(self.components),
            "chain": list(reversed(levels)),
        }


def recipe_hash(recipe: Recipe) -> str:
    """Content hash of a resolved recipe chain (16 hex digits of sha256); names its cache entry."""
    canonical = json.dumps(recipe.canonical(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _load_recipe_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping (distro/suite/packages or base/packages)")
    return data


def _packages(path_hint: str, data: Mapping[str, Any]) -> tuple[str, ...]:
    raw = data.get("packages", [])
    if not isinstance(raw, list) or not all(isinstance(p, str) and p.strip() for p in raw):
        raise RecipeError(f"{path_hint}: packages must be a list of package names")
    return tuple(p.strip() for p in raw)


def _recipe_path(dirs: list[Path], name: str) -> Path:
    path = find_recipe(dirs, name)
    if path is None:
        known = sorted({p.stem for folder in dirs for p in folder.glob("*.yml")})
        raise RecipeError(
            f"image recipe {name!r} not found (looked in {describe_dirs(dirs)})",
            hint=f"known recipes: {', '.join(known) or 'none'}; `stacklab recipes` lists them and where each is from",
        )
    return path


def _check_level(where: str, data: Mapping[str, Any]) -> None:
    """One recipe file's keys: a derived recipe (with `base:`) only adds packages; a root names the distro."""
    if "base" in data:
        unknown = set(data) - _DERIVED_KEYS
        if unknown:
            raise RecipeError(
                f"{where}: a derived recipe (with base:) only adds packages; unexpected keys: "
                f"{', '.join(sorted(unknown))}",
                hint="distro, suite and variant come from the root recipe",
            )
        if not isinstance(data["base"], str) or not data["base"]:
            raise RecipeError(f"{where}: base must name another recipe")
        if data.get("services", "disabled") not in _SERVICE_POLICIES:
            raise RecipeError(f"{where}: services must be one of {', '.join(sorted(_SERVICE_POLICIES))}")
    else:
        unknown = set(data) - _ROOT_KEYS
        if unknown:
            raise RecipeError(f"{where}: unexpected keys: {', '.join(sorted(unknown))}")
    _packages(where, data)


def _root_settings(where: str, root: Mapping[str, Any]) -> dict[str, Any]:
    """The build settings every level inherits from the root recipe: distro, suite, variant, mirrors, components."""
    distro = str(root.get("distro", ""))
    suite = str(root.get("suite", ""))
    if distro not in DEFAULT_MIRRORS:
        raise RecipeError(
            f"{where}: distro {distro!r} is not supported", hint=f"use one of: {', '.join(sorted(DEFAULT_MIRRORS))}"
        )
    if not suite:
        raise RecipeError(f"{where}: suite is required (e.g. bookworm)")
    variant = str(root.get("variant", "minbase"))
    if variant not in _VARIANTS:
        raise RecipeError(f"{where}: variant {variant!r} is not one of {', '.join(sorted(_VARIANTS))}")
    default_mirror, default_security = DEFAULT_MIRRORS[distro]
    components_raw = root.get("components", ["main"])
    if not isinstance(components_raw, list) or not components_raw:
        raise RecipeError(f"{where}: components must be a non-empty list, e.g. [main]")
    return {
        "distro": distro,
        "suite": suite,
        "variant": variant,
        "mirror": str(root.get("mirror") or os.environ.get(MIRROR_ENV) or default_mirror).rstrip("/"),
        "security_mirror": str(root.get("security_mirror") or default_security).rstrip("/"),
        "components": tuple(str(c) for c in components_raw),
    }


def resolve_recipe(images: Path | Sequence[Path], name: str) -> Recipe:
    """Load recipe `name` and its `base:` chain into one Recipe (pure apart from reading the files).

    `images` is one recipe directory or a search path (model.paths.recipe_dirs: the lab's images/, the user's,
    the built-in); each level of the chain is the first `<level>.yml` along it, so a lab's own recipe can build
    on a built-in one. Packages accumulate from the root down; distro, suite, variant and mirrors come from the
    root recipe. The mirror defaults to deb.debian.org, or $STACKLAB_DEBIAN_MIRROR when set.
    """
    dirs = [images] if isinstance(images, Path) else list(images)
    paths: dict[str, Path] = {}
    chain: list[tuple[str, dict[str, Any]]] = []
    current: str | None = name
    while current is not None:
        if any(current == seen for seen, _ in chain):
            names = " -> ".join([*(n for n, _ in chain), current])
            raise RecipeError(
                f"image recipes form a cycle: {names}", hint="one recipe in the chain must not have base:"
            )
        paths[current] = _recipe_path(dirs, current)
        data = _load_recipe_file(paths[current])
        where = str(paths[current])
        _check_level(where, data)
        chain.append((current, data))
        current = data.get("base")

    root_name, root = chain[-1]
    root_settings = _root_settings(str(paths[root_name]), root)

    recipe: Recipe | None = None
    accumulated: list[str] = []
    for level_name, data in reversed(chain):
        own = _packages(str(paths[level_name]), data)
        accumulated.extend(p for p in own if p not in accumulated)
        recipe = Recipe(
            name=level_name,
            **root_settings,
            own_packages=own,
            packages=tuple(accumulated),
            chain=(*(recipe.chain if recipe else ()), level_name),
            parent=recipe,
            services=str(data.get("services", "disabled")),
        )
    assert recipe is not None
    return recipe
