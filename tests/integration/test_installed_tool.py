"""stacklab as a user installs it: a wheel in a venv made like the README's, used from outside the checkout.

The venv is `/usr/bin/python3 -m venv --system-site-packages`, on a host where Debian's python3-paramiko (2.12),
python3-click (8.1.3), python3-yaml (6.0) and python3-pydantic (1.10) are installed: pip keeps what satisfies
the wheel's floors (PyYAML) and upgrades what does not (paramiko 2.12 lacks `channel_timeout`, click 8.1's
CliRunner mixes stderr, pydantic 1). From an empty directory: `init`, `validate`, `up` of a small container lab
(unique name and /24s, built-in recipes), `ssh`, `verify --suite infra`, `down`.

The floors themselves: a second venv gets every runtime dependency at exactly its lower bound (read from the
wheel's metadata) and runs the unit tests, so a bound that is too low fails here, naming the test.

Images: the installed tool uses the host-wide cache (/var/cache/stacklab/images or $STACKLAB_IMAGE_CACHE); the
built-in debian-12-base recipe has the same content hash as the checkout's, so a host where any lab built it
reuses that rootfs (warm: the whole test is ~1 min). On a cold host the image build (mmdebstrap, several minutes)
is part of this test's time.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from stacklab.exec.runner import CommandResult, LocalRunner
from tests.integration.lab_cli import CONTAINER_LAB_MARKS, ROOT

pytestmark = CONTAINER_LAB_MARKS
DEBIAN_PACKAGES = ("python3-paramiko", "python3-click", "python3-yaml", "python3-pydantic")
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _missing_debian_packages() -> list[str]:
    missing = []
    for package in DEBIAN_PACKAGES:
        probe = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False, timeout=30
        )
        if "install ok installed" not in probe.stdout:
            missing.append(package)
    return missing


def _debian_python_libraries() -> None:
    """Debian's older python3-* libraries present (installed with apt when missing), or skip saying why."""
    if os.geteuid() != 0:
        pytest.skip("needs root (apt, bridges, containers)")
    if shutil.which("dpkg-query") is None or not SYSTEM_PYTHON.exists():
        pytest.skip("not a Debian host with /usr/bin/python3")
    missing = _missing_debian_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        pytest.skip(f"Debian packages {', '.join(missing)} are missing and apt-get is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q", "--no-install-recommends", *missing]
    result = subprocess.run(install, capture_output=True, text=True, env=env, check=False, timeout=900)
    if result.returncode != 0:  # stale package lists on a fresh CI host: update once, then try again
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False, timeout=900)
        result = subprocess.run(install, capture_output=True, text=True, env=env, check=False, timeout=900)
    if result.returncode != 0:
        pytest.skip(f"apt-get install {' '.join(missing)} failed: {result.stderr.strip()[-500:]}")


class InstalledTool:
    """The installed `stacklab` run from `workdir` with its own state and an empty user config."""

    def __init__(self, venv: Path, workdir: Path, state: Path, config: Path) -> None:
        self.venv = venv
        self.workdir = workdir
        self.env = {"STACKLAB_STATE": str(state), "XDG_CONFIG_HOME": str(config), "PYTHONPATH": ""}
        self.times: dict[str, float] = {}
        self.wheel = Path()
        self.floors_venv = Path()

    def python(self, code: str) -> str:
        result = LocalRunner().run(
            [str(self.venv / "bin" / "python"), "-c", code], timeout=60, env=self.env, cwd=self.workdir
        )
        return result.stdout.strip()

    def __call__(self, *args: str, check: bool = True, timeout: float = 900) -> CommandResult:
        start = time.monotonic()
        result = LocalRunner().run(
            [str(self.venv / "bin" / "stacklab"), *args], timeout=timeout, check=False, env=self.env, cwd=self.workdir
        )
        self.times[args[0]] = self.times.get(args[0], 0.0) + time.monotonic() - start
        if check:
            assert result.ok, (
                f"stacklab {' '.join(args)} -> {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-4000:]}"
            )
        return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstalledTool]:
    _debian_python_libraries()
    base = tmp_path_factory.mktemp("installed")
    times: dict[str, float] = {}
    start = time.monotonic()
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = dist.glob("stacklab-*.whl")
    times["wheel build"] = time.monotonic() - start
    floors_venv = base / "floors"
    subprocess.run(
        [str(SYSTEM_PYTHON), "-m", "venv", "--system-site-packages", str(floors_venv)], check=True, timeout=300
    )
    venv = base / "venv"
    start = time.monotonic()
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    times["venv + pip install"] = time.monotonic() - start
    workdir = base / "work"  # empty, outside the checkout: no images/, cloud-init/ or labs/ above it
    workdir.mkdir()
    tool = InstalledTool(venv, workdir, base / "state", base / "config")
    tool.wheel = wheel
    tool.floors_venv = floors_venv
    tool.times.update(times)
    tool.times["wheel KiB"] = wheel.stat().st_size / 1024
    yield tool
    print("installed-tool timings:", ", ".join(f"{k} {v:.1f}" for k, v in tool.times.items()))


def test_the_venv_keeps_debians_libraries_that_satisfy_the_floors_and_upgrades_the_rest(
    installed: InstalledTool,
) -> None:
    versions = installed.python(
        "import click, paramiko, pydantic, yaml, stacklab, sys; "
        "print(click.__file__, paramiko.__version__, pydantic.VERSION, yaml.__file__, stacklab.__file__)"
    ).split()
    click_file, paramiko_version, pydantic_version, yaml_file, stacklab_file = versions
    # Debian's PyYAML 6.0 meets its floor: the tool runs on it
    assert yaml_file.startswith("/usr/lib/python3/dist-packages/"), yaml_file
    # below their floors, so pip put newer ones in the venv: paramiko 2.12 (no channel_timeout), click 8.1.3
    assert str(installed.venv) in click_file, click_file
    assert tuple(int(x) for x in paramiko_version.split(".")[:2]) >= (3, 2), paramiko_version
    assert pydantic_version.startswith("2."), pydantic_version
    assert str(installed.venv) in stacklab_file and str(ROOT) not in stacklab_file
    doctor = installed("doctor", "--json")
    assert '"choices"' in doctor.stdout


@pytest.mark.timeout(3600)  # a cold image cache builds debian-12-base first (mmdebstrap, minutes)
def test_init_validate_up_ssh_verify_down_from_an_empty_directory(installed: InstalledTool) -> None:
    name = f"inst-{secrets.token_hex(3)}"
    init = installed("init", "--name", name, "lab")
    assert f"stacklab up {Path('lab') / 'lab.yml'}" in init.stdout
    lab_file = installed.workdir / "lab" / "lab.yml"
    text = lab_file.read_text()
    for index, cidr in enumerate(sorted(set(re.findall(r"cidr: (\d+\.\d+\.\d+\.0/24)", text)))):
        text = text.replace(cidr, f"10.{150 + 40 * index + secrets.randbelow(40)}.{secrets.randbelow(250)}.0/24")
    lab_file.write_text(text)

    recipes = installed("recipes")
    assert re.search(
        r"^debian-12-base\s+built-in\s+\S+/venv/lib/python3[^/]*/site-packages/stacklab/data/", recipes.stdout, re.M
    )
    validate = installed("validate", "lab/lab.yml")
    assert f"lab {name!r} is valid" in validate.stdout
    try:
        installed("up", "-y", "lab/lab.yml", timeout=1800)
        hostname = installed("ssh", name, "n1", "--", "cat", "/etc/hostname", timeout=120)
        assert hostname.stdout.strip() == "n1"
        report = installed("verify", name, "--suite", "infra", check=False, timeout=900)
        assert report.ok, report.stdout[-6000:] + report.stderr[-2000:]
        assert " passed" in report.stdout and " failed" not in report.stdout, report.stdout[-3000:]
        down = installed("down", name, timeout=900)
        assert "leak check: clean" in down.stderr, down.stderr[-3000:]
    finally:
        installed("down", "--no-leak-check", name, check=False, timeout=900)


def _floor_pins(wheel: Path) -> list[str]:
    """`name==lower-bound` for every runtime requirement of the wheel (extras left out)."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    pins = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:") or "extra ==" in line:
            continue
        requirement = line.split(":", 1)[1].replace(" ", "").replace("(", "").replace(")", "")
        name = re.split(r"[<>=!~;]", requirement, maxsplit=1)[0]
        floor = re.search(r">=([0-9][0-9.]*)", requirement)
        assert floor, f"{requirement}: every runtime dependency needs a lower bound"
        pins.append(f"{name}=={floor[1]}")
    return pins


@pytest.mark.timeout(1800)
def test_the_unit_tests_pass_with_every_dependency_at_its_floor(installed: InstalledTool) -> None:
    pins = _floor_pins(installed.wheel)
    python = str(installed.floors_venv / "bin" / "python")
    # the checkout's own tests need hypothesis too (not a runtime dependency, so not pinned), and their wheel
    # build (--no-build-isolation) what pyproject's build-system asks for: the SPDX `license` needs setuptools 77
    # and an installed packaging 24.2 (Debian 12: 66 and 23.0)
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", *pins, "hypothesis", "setuptools>=77", "packaging>=24.2"],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    )
    have = {
        name.lower().replace("_", "-"): Version(version)
        for name, _, version in (line.partition("==") for line in listed.stdout.splitlines())
        if version
    }
    for pin in pins:  # pip may keep a Debian package that already is exactly the floor
        name, _, floor = pin.partition("==")
        assert have.get(name.lower().replace("_", "-")) == Version(floor), (pin, listed.stdout)
    unit = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not integration", "tests/unit"],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},  # the checkout's code on the floor libraries
    )
    assert unit.returncode == 0, f"at the floors ({' '.join(pins)}):\n{unit.stdout[-6000:]}"
