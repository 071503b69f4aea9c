"""The installed tool's data: recipes, templates and labs ship in the wheel and resolve lab > user > built-in."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from stacklab.cli import main
from stacklab.drivers.nodes.recipe import RecipeError, resolve_recipe
from stacklab.drivers.nodes.seed import find_templates_dir
from stacklab.model import LabError, load_lab
from stacklab.model.paths import (
    CLOUD_INIT,
    IMAGES,
    LABS,
    ORIGIN_BUILTIN,
    ORIGIN_LAB,
    ORIGIN_USER,
    builtin_dir,
    list_recipes,
    recipe_dirs,
)
from stacklab.model.starter import StarterError, write_starter

ROOT = Path(__file__).resolve().parents[2]
LAB = """\
name: outside
networks:
  mgmt: {bridge: br-mgmt, cidr: 10.250.10.0/24}
  storage: {bridge: br-storage, cidr: 10.250.20.0/24}
images:
  base: {recipe: RECIPE}
nodes:
  n1: {kind: container, image: base, nics: [mgmt, storage]}
"""


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory outside the checkout, with its own (empty) XDG config home, as the cwd."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _recipe(folder: Path, name: str, packages: list[str], base: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    head = f"base: {base}\n" if base else "distro: debian\nsuite: bookworm\n"
    (folder / f"{name}.yml").write_text(head + f"packages: [{', '.join(packages)}]\n")


def test_builtin_data_is_the_checkouts_top_level_data() -> None:
    # In a checkout the package's data/ points at images/, cloud-init/ and labs/: one source of truth.
    for kind in (IMAGES, CLOUD_INIT, LABS):
        assert builtin_dir(kind).resolve() == (ROOT / kind).resolve()
    assert {p.stem for p in builtin_dir(IMAGES).glob("*.yml")} == {p.stem for p in (ROOT / IMAGES).glob("*.yml")}


def test_a_lab_outside_the_checkout_validates_with_builtin_recipes(outside: Path) -> None:
    lab_file = outside / "lab.yml"
    lab_file.write_text(LAB.replace("RECIPE", "debian-12-base"))
    assert load_lab(lab_file).name == "outside"
    recipe = resolve_recipe(recipe_dirs(outside), "debian-12-base")
    assert recipe.suite == "bookworm" and "openssh-server" in recipe.packages


def test_an_unknown_recipe_names_every_place_looked(outside: Path) -> None:
    lab_file = outside / "lab.yml"
    lab_file.write_text(LAB.replace("RECIPE", "no-such"))
    with pytest.raises(LabError) as caught:
        load_lab(lab_file)
    message = str(caught.value)
    assert "recipe 'no-such' not found" in message and str(builtin_dir(IMAGES)) in message
    assert "lab.yml:6:" in message


def test_lab_recipes_shadow_user_recipes_which_shadow_builtins(outside: Path, tmp_path: Path) -> None:
    user = tmp_path / "config" / "stacklab" / IMAGES
    _recipe(user, "debian-12-base", ["vim"])
    _recipe(user, "mine", ["tmux"], base="debian-12-base")
    lab_images = outside / IMAGES
    _recipe(lab_images, "mine", ["htop"], base="debian-12-base")

    sub = outside / "labs" / "deep"
    sub.mkdir(parents=True)
    dirs = recipe_dirs(sub)  # images/ above the lab file's directory
    assert dirs[:2] == [lab_images.resolve(), user]
    mine = resolve_recipe(dirs, "mine")
    # the lab's `mine` wins; its base resolves along the same path: the user's debian-12-base, not the built-in
    assert mine.own_packages == ("htop",) and mine.packages == ("vim", "htop")

    listed = {e.name: e for e in list_recipes(sub)}
    assert listed["mine"].origin == ORIGIN_LAB and listed["mine"].shadows == (ORIGIN_USER,)
    assert listed["debian-12-base"].origin == ORIGIN_USER and listed["debian-12-base"].shadows == (ORIGIN_BUILTIN,)
    assert listed["storage"].origin == ORIGIN_BUILTIN


def test_a_missing_base_recipe_names_the_search_path(outside: Path) -> None:
    _recipe(outside / IMAGES, "orphan", ["htop"], base="nowhere")
    with pytest.raises(RecipeError, match=r"image recipe 'nowhere' not found \(looked in .*images"):
        resolve_recipe(recipe_dirs(outside), "orphan")


def test_cloud_init_templates_resolve_lab_then_user_then_builtin(outside: Path, tmp_path: Path) -> None:
    assert find_templates_dir(outside) == builtin_dir(CLOUD_INIT)
    user = tmp_path / "config" / "stacklab" / CLOUD_INIT
    shutil.copytree(builtin_dir(CLOUD_INIT), user)
    assert find_templates_dir(outside) == user
    shutil.copytree(builtin_dir(CLOUD_INIT), outside / CLOUD_INIT)
    assert find_templates_dir(outside) == (outside / CLOUD_INIT).resolve()
    # an incomplete directory (one template missing) is passed over, not half-used
    (outside / CLOUD_INIT / "user-data").unlink()
    assert find_templates_dir(outside) == user


def test_recipes_command_says_where_each_recipe_comes_from(outside: Path) -> None:
    _recipe(outside / IMAGES, "storage", ["htop"], base="debian-12-base")
    result = CliRunner().invoke(main, ["recipes", "--lab", str(outside)])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if not line.startswith("#")}
    assert rows["storage"][1] == ORIGIN_LAB and "(hides built-in)" in result.output
    assert rows["openstack-zed"][1] == ORIGIN_BUILTIN


def test_init_writes_a_valid_starter_and_refuses_to_overwrite(outside: Path) -> None:
    result = CliRunner().invoke(main, ["init", "--from", "aio", "--name", "trainee1", "mylab"])
    assert result.exit_code == 0, result.output
    written = outside / "mylab" / "lab.yml"
    lab = load_lab(written)
    assert lab.name == "trainee1" and "storage" in lab.networks
    assert f"stacklab up {Path('mylab') / 'lab.yml'}" in result.output
    # comments of the built-in lab are kept (a trainer's hand-out explains itself)
    assert written.read_text().startswith("# The default lab")
    with pytest.raises(StarterError, match="exists"):
        write_starter(outside / "mylab", "aio")
    with pytest.raises(StarterError, match="no built-in lab 'nope'"):
        write_starter(outside / "other", "nope")
    assert not (outside / "other").exists()


def test_init_with_a_bad_name_exits_2_and_writes_nothing(outside: Path) -> None:
    result = CliRunner().invoke(main, ["init", "--name", "Bad_Name", "x"])
    assert result.exit_code == 2 and "name" in result.output
    assert not (outside / "x").exists()


@pytest.mark.slow
def test_the_wheel_carries_recipes_templates_and_labs_but_not_broken_labs(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("stacklab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind, pattern in ((IMAGES, "*.yml"), (CLOUD_INIT, "*"), (LABS, "*.yml")):
        expected = {f"stacklab/data/{kind}/{p.name}" for p in (ROOT / kind).glob(pattern) if p.is_file()}
        assert expected and expected <= names, kind
    assert not any("/broken/" in n for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    # old setuptools writes `paramiko (>=3.1)`, newer `paramiko>=3.1`
    runtime = [r.replace(" ", "").replace("(", "").replace(")", "") for r in requires if "extra ==" not in r]
    assert "paramiko>=3.2" in runtime and "click>=8.2" in runtime and "pytest-testinfra>=10" in runtime
    assert not any(r.startswith("fabric") for r in requires)
