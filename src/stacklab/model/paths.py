"""Where a lab's recipes, templates and starter labs come from: the lab's own tree, the user's, then built-ins.

One search order for image recipes (`images/`) and cloud-init templates (`cloud-init/`), so a lab file works
from any directory, inside a checkout or not:

1. `lab`: the nearest `images/` (or `cloud-init/`) in the lab file's directory or above it;
2. `user`: `$XDG_CONFIG_HOME/stacklab/images/` (default `~/.config/stacklab/images/`);
3. `built-in`: the copies shipped inside the package (`stacklab/data/`, read through importlib.resources).

In a checkout `stacklab/data/*` are symlinks to the top-level `images/`, `cloud-init/` and `labs/`, which stay
the source of truth; a built wheel holds the files themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

IMAGES = "images"
CLOUD_INIT = "cloud-init"
LABS = "labs"

ORIGIN_LAB = "lab"
ORIGIN_USER = "user"
ORIGIN_BUILTIN = "built-in"


@dataclass(frozen=True)
class SearchDir:
    """A directory that may hold recipes or templates, and where it comes from (lab, user or built-in)."""

    path: Path
    origin: str


def find_up(start: Path, name: str) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / name
        if candidate.is_dir():
            return candidate
    return None


def user_config_dir() -> Path:
    """`$XDG_CONFIG_HOME/stacklab` (XDG base directory spec: unset or relative means ~/.config)."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "stacklab"


def builtin_dir(kind: str) -> Path:
    """The copy of `kind` (images, cloud-init, labs) shipped in the package.

    stacklab is installed as files (never zipped), so the resource is a real directory that mmdebstrap's
    recipe reader and Jinja's FileSystemLoader can use directly.
    """
    return Path(str(resources.files("stacklab").joinpath("data", kind)))


def search_dirs(kind: str, lab_dir: Path | None) -> list[SearchDir]:
    """The existing directories for `kind` in lookup order: the lab's tree, the user's, the built-in."""
    found: list[SearchDir] = []
    if lab_dir is not None:
        above = find_up(lab_dir.resolve(), kind)
        if above is not None:
            found.append(SearchDir(above, ORIGIN_LAB))
    user = user_config_dir() / kind
    if user.is_dir():
        found.append(SearchDir(user, ORIGIN_USER))
    builtin = builtin_dir(kind)
    if builtin.is_dir() and all(builtin.resolve() != d.path.resolve() for d in found):
        found.append(SearchDir(builtin, ORIGIN_BUILTIN))
    return found


def recipe_dirs(lab_dir: Path | None) -> list[Path]:
    return [d.path for d in search_dirs(IMAGES, lab_dir)]


def find_recipe(dirs: list[Path], name: str) -> Path | None:
    """The first `<name>.yml` along the search path (a lab's recipe shadows the user's, which shadows a built-in)."""
    for folder in dirs:
        candidate = folder / f"{name}.yml"
        if candidate.is_file():
            return candidate
    return None


def describe_dirs(dirs: list[Path]) -> str:
    return ", ".join(str(d) for d in dirs) or "no images/ directory (lab tree, user config or built-in)"


@dataclass(frozen=True)
class RecipeEntry:
    name: str
    path: Path
    origin: str
    shadows: tuple[str, ...]  # origins of same-named recipes this one hides


def list_recipes(lab_dir: Path | None) -> list[RecipeEntry]:
    """Every recipe name visible from `lab_dir`, with the file that wins and the origins it hides."""
    winners: dict[str, RecipeEntry] = {}
    for folder in search_dirs(IMAGES, lab_dir):
        for path in sorted(folder.path.glob("*.yml")):
            known = winners.get(path.stem)
            if known is None:
                winners[path.stem] = RecipeEntry(path.stem, path, folder.origin, ())
            else:
                winners[path.stem] = RecipeEntry(known.name, known.path, known.origin, (*known.shadows, folder.origin))
    return [winners[name] for name in sorted(winners)]
