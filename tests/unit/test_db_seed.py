"""Pre-seeded schemas: the first lab's sync leaves a seed, the next lab with the same packages loads it instead of
migrating, a seed that does not reach the same version (or a database that is not empty) falls back to the sync,
and no seed is kept that carries the lab's secrets or a URL with credentials."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from stacklab.drivers.base import DriverContext
from stacklab.drivers.openstack import db_seed
from stacklab.exec.runner import CommandError, CommandResult
from stacklab.model.lab import Lab
from stacklab.secrets import store_secret

SYNC = ["runuser", "-u", "nova", "--", "nova-manage", "--config-file", "/etc/nova/nova.conf", "db", "sync"]
PACKAGES = "ii |python3-nova|3:26.2.0-1\nii |nova-common|3:26.2.0-1\nii |python3-alembic|1.8.1-2\nrc |nova-old|1\n"


@dataclass
class FakeMariaDB:
    """A node with MariaDB: databases -> their tables; the sync makes tables, mysqldump and mysql move them."""

    tables: dict[str, list[str]] = field(default_factory=lambda: {"nova": [], "nova_cell0": []})
    packages: str = PACKAGES
    syncs: int = 0
    row: str = "('head')"  # what the version table holds after the sync
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True, input: str | None = None,
            **_: Any) -> CommandResult:  # fmt: skip
        assert timeout > 0
        args = tuple(argv)
        self.calls.append(args)
        out, rc = self.respond(args, input)
        result = CommandResult(args, rc, out, "", 0.0)
        if check and rc:
            raise CommandError(result)
        return result

    def respond(self, args: tuple[str, ...], stdin: str | None) -> tuple[str, int]:
        if args[0] == "dpkg-query":
            return self.packages, 0
        if args[0] == "mysqldump":
            return "".join(f"CREATE TABLE {t};\n" for t in self.tables[args[-1]]) + f"INSERT v {self.row};\n", 0
        if args[0] == "mysql":
            assert stdin is not None
            if "-N" in args:  # the table count
                db = stdin.split("'")[1]
                return f"{len(self.tables[db])}\n", 0
            if args[-1] in self.tables:  # a dump loaded into one database
                self.tables[args[-1]] = [line.split()[2].rstrip(";") for line in stdin.splitlines() if "CREATE" in line]
                self.row = stdin.split("INSERT v ")[1].split(";")[0]
                return "", 0
            for line in stdin.splitlines():  # DROP / CREATE DATABASE
                if line.startswith("CREATE DATABASE"):
                    self.tables[line.split("`")[1]] = []
            return "", 0
        if args[-2:] == ("db", "sync"):
            self.syncs += 1
            self.tables = {db: [f"{db}_instances", f"{db}_hosts"] for db in self.tables}
            self.row = "('head')"
            return "", 0
        if args[-2:] == ("db", "version"):
            return f"{self.row}\n", 0
        raise AssertionError(f"unexpected command {args}")


@pytest.fixture(autouse=True)
def seed_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "seeds"
    monkeypatch.setenv(db_seed.CACHE_ENV, str(cache))
    return cache


def context(tmp_path: Path, name: str) -> DriverContext:
    return DriverContext(lab=cast("Lab", None), runner=FakeMariaDB(), state_dir=tmp_path / name)


def sync(ctx: DriverContext, node: FakeMariaDB) -> None:
    db_seed.seeded_sync(ctx, node, ("nova", "nova_cell0"), SYNC, timeout=60)


def test_the_second_lab_loads_the_first_labs_schema_instead_of_migrating(tmp_path: Path, seed_cache: Path) -> None:
    first, second = FakeMariaDB(), FakeMariaDB()
    sync(context(tmp_path, "a"), first)
    assert first.syncs == 1
    [seed] = seed_cache.iterdir()
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600 and stat.S_IMODE(seed_cache.stat().st_mode) == 0o700
    sync(context(tmp_path, "b"), second)
    assert second.syncs == 0 and second.tables == first.tables
    assert [*SYNC[:-2], "db", "version"] in [list(c) for c in second.calls]  # the service's own check ran


def test_a_database_that_holds_tables_runs_the_sync_and_leaves_the_cache_alone(
    tmp_path: Path, seed_cache: Path
) -> None:
    node = FakeMariaDB(tables={"nova": ["instances"], "nova_cell0": []})
    sync(context(tmp_path, "a"), node)
    assert node.syncs == 1 and not seed_cache.exists()
    assert not any(c[0] in ("dpkg-query", "mysqldump") for c in node.calls)


def test_other_package_versions_miss_the_seed(tmp_path: Path) -> None:
    sync(context(tmp_path, "a"), FakeMariaDB())
    upgraded = FakeMariaDB(packages=PACKAGES.replace("26.2.0-1", "26.2.1-1"))
    sync(context(tmp_path, "b"), upgraded)
    assert upgraded.syncs == 1


def test_a_seed_that_does_not_reach_the_same_version_falls_back_to_the_sync(tmp_path: Path, seed_cache: Path) -> None:
    sync(context(tmp_path, "a"), FakeMariaDB())
    [seed] = seed_cache.iterdir()
    seed.write_text(seed.read_text().replace("('head')", "('older')", 2))  # the dumps, not the recorded version
    node = FakeMariaDB()
    sync(context(tmp_path, "b"), node)
    assert node.syncs == 1 and node.row == "('head')"
    assert any(c[0] == "mysql" and c[-1] == "root" for c in node.calls)  # emptied again before the sync


@pytest.mark.parametrize("row", ["('s3cret-password-of-lab-a')", "('mysql+pymysql://nova:pw@10.0.0.1/nova')"])
def test_no_seed_is_kept_that_carries_secrets_or_credentials(tmp_path: Path, seed_cache: Path, row: str) -> None:
    ctx = context(tmp_path, "a")
    store_secret(ctx.state_dir, "nova-db", "s3cret-password-of-lab-a")

    class Leaky(FakeMariaDB):
        def respond(self, args: tuple[str, ...], stdin: str | None) -> tuple[str, int]:
            out, rc = super().respond(args, stdin)
            return (out.replace("('head')", row), rc) if args[0] == "mysqldump" else (out, rc)

    node = Leaky()
    sync(ctx, node)
    assert node.syncs == 1 and not list(seed_cache.glob("*.json"))


def test_version_commands_follow_each_tools_sync() -> None:
    assert db_seed.version_argv(["keystone-manage", "db_sync"]) == ["keystone-manage", "db_version"]
    assert db_seed.version_argv(["nova-manage", "api_db", "sync"]) == ["nova-manage", "api_db", "version"]
    assert db_seed.version_argv(["neutron-db-manage", "upgrade", "heads"]) == ["neutron-db-manage", "current"]
    with pytest.raises(ValueError):
        db_seed.version_argv(["x-manage", "migrate"])


def test_a_version_is_compared_without_the_tools_log_lines() -> None:
    out = ("2026-12-06 23:37:43.307 4482 INFO alembic.runtime.migration [-] Context impl MySQLImpl.\x1b[00m\n"
           "2026-12-06 23:37:43.308 4482 INFO alembic.runtime.migration [-] Will assume non-transactional DDL.\n"
           "b30f573d3377\n")  # fmt: skip
    assert db_seed.version_text(out) == "b30f573d3377"
    neutron = "Running current for neutron ...\n5881373af7f5 (head)\n  OK\n"
    assert db_seed.version_text(neutron) == "5881373af7f5 (head)\nOK\nRunning current for neutron ..."
    # neutron's two branch heads came in either order (the reference lab's seed fell back to the sync so)
    made = "Running current for neutron ...\n5881373af7f5 (head)\n5c85685d616d (head)\nOK\n"
    loaded = "Running current for neutron ...\n5c85685d616d (head)\n5881373af7f5 (head)\nOK\n"
    assert db_seed.version_text(made) == db_seed.version_text(loaded)
    assert db_seed.version_text(made) != db_seed.version_text(made.replace("5c85685d616d", "000000000000"))
