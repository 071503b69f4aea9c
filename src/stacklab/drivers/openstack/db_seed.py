"""Pre-seeded database schemas: a service's `db sync` on a fresh database is the same in every lab built from the
same packages, so the first lab keeps a dump of the migrated schema and later labs load it instead of migrating.

Measured under load (2 shared cores): the syncs of placement, neutron, heat and cinder run side by side and take
60-240 s each (nova's `db sync` alone 58-236 s); loading the same schema with `mysql` takes a few seconds.

The key (sha256) covers everything a migration's result depends on: the service's packages and the database
libraries at their exact dpkg versions on the node (python3-<service>*, <service>-*, alembic, SQLAlchemy,
sqlalchemy-migrate, oslo.db, MariaDB), the sync command line (config paths only: no secret is ever on argv) and the
databases' names. A dump is loaded only into databases that hold no table yet (a second `up`, or a lab upgraded in
place, runs the service's own sync as before), and afterwards the service's own version command
(`nova-manage db version`, `cinder-manage db version`, `neutron-db-manage current`, ...) must print what it printed
when the dump was made; otherwise the databases are emptied again and the sync runs.

A dump never carries a lab's secrets: it is made right after the sync on a fresh database (nova's cell mappings,
which hold transport and database URLs, are written by `cell_v2` commands outside the seeded steps), and it is not
kept when it holds any of the making lab's secrets or a URL with credentials. The cache is host-side, shared by
labs like the image cache (`/var/cache/stacklab/db-seeds` or $STACKLAB_DB_SEED_CACHE), directory 0700, files 0600.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from stacklab.drivers.base import DriverContext
from stacklab.exec.atomic import write_atomic
from stacklab.exec.runner import CommandError, Runner

LOG = logging.getLogger(__name__)

CACHE_ENV = "STACKLAB_DB_SEED_CACHE"
DEFAULT_CACHE = Path("/var/cache/stacklab/db-seeds")
FORMAT = 1  # bump when what a seed holds, or how it is loaded, changes
SQL_TIMEOUT = 300.0
MYSQL = ("mysql", "--protocol=socket", "-u", "root")
MYSQLDUMP = (
    "mysqldump", "--protocol=socket", "-u", "root", "--single-transaction", "--skip-dump-date", "--skip-comments",
    "--routines", "--triggers", "--events",
)  # fmt: skip
# the sync's last words -> the same tool's command that prints the schema version it left
VERSION_OF: dict[tuple[str, ...], tuple[str, ...]] = {
    ("db_sync",): ("db_version",),
    ("db", "sync"): ("db", "version"),
    ("api_db", "sync"): ("api_db", "version"),
    ("upgrade", "heads"): ("current",),
}
LIBRARIES = ("python3-alembic", "python3-sqlalchemy", "python3-migrate", "python3-oslo.db", "mariadb-server")
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# oslo.log's lines, which some tools print on stdout before the version (`2026-12-06 23:37:43.307 4482 INFO ...`)
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \d+ [A-Z]+ ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CREDENTIAL_URL = re.compile(r"[a-z0-9+]+://[^\s'\"/@]*:[^\s'\"/@]*@", re.IGNORECASE)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def version_argv(sync: Sequence[str]) -> list[str]:
    """The sync's command line with its last words replaced by the tool's version command."""
    for tail, version in VERSION_OF.items():
        if tuple(sync[-len(tail) :]) == tail:
            return [*sync[: -len(tail)], *version]
    raise ValueError(f"no version command known for {' '.join(sync)}")


def service_of(sync: Sequence[str]) -> str:
    """The service whose user runs the sync (`runuser -u nova -- nova-manage ...`): its packages go in the key."""
    if len(sync) > 3 and sync[0] == "runuser" and sync[1] == "-u":
        return sync[2]
    raise ValueError(f"a sync runs as the service's user (runuser -u <service> --): {' '.join(sync)}")


def package_versions(runner: Runner, service: str) -> list[str]:
    """`package=version` of what the migrations depend on, installed on the node, sorted."""
    out = runner.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Package}|${Version}\n"], timeout=60).stdout
    wanted: list[str] = []
    for line in out.splitlines():
        status, _, rest = line.partition("|")
        package, _, version = rest.partition("|")
        if not status.startswith("ii"):
            continue
        ours = package.startswith((f"python3-{service}", f"{service}-")) or package == service
        if ours or package in LIBRARIES or (service == "neutron" and package.startswith("python3-networking-")):
            wanted.append(f"{package}={version}")
    return sorted(wanted)


def version_text(stdout: str) -> str:
    """What a version command says, without its log lines (timestamps, PIDs) and colour codes, its lines sorted:
    `neutron-db-manage current` lists the heads of its two branches (expand, contract) in either order."""
    lines = (_ANSI.sub("", line).strip() for line in stdout.splitlines())
    return "\n".join(sorted(line for line in lines if line and not _LOG_LINE.match(line)))


def seed_key(packages: Sequence[str], databases: Sequence[str], sync: Sequence[str]) -> str:
    text = json.dumps({"format": FORMAT, "packages": list(packages), "databases": list(databases),
                       "sync": list(sync)}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _tables(runner: Runner, database: str) -> int | None:
    """How many tables the database holds; None when the answer is not a number (then nothing is seeded)."""
    sql = f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{database}';\n"
    out = runner.run([*MYSQL, "-N", "-B"], input=sql, timeout=SQL_TIMEOUT).stdout.strip()
    return int(out) if out.isdigit() else None


def _empty_again(runner: Runner, databases: Sequence[str]) -> None:
    """Drop and create the databases (MariaDB keeps database-level grants across a drop): the sync starts clean."""
    sql = "".join(f"DROP DATABASE IF EXISTS `{db}`;\nCREATE DATABASE `{db}`;\n" for db in databases)
    runner.run(list(MYSQL), input=sql, timeout=SQL_TIMEOUT)


def lab_secrets(ctx: DriverContext) -> list[str]:
    folder = ctx.state_dir / "secrets"
    if not folder.is_dir():
        return []
    return [text for f in folder.iterdir() if f.is_file() and len(text := f.read_text(errors="replace").strip()) >= 8]


def leaks(dump: str, secrets: Sequence[str]) -> list[str]:
    """Why the dump must not be shared: one of the lab's secrets in it, or a URL that carries credentials."""
    found = ["a secret of the lab that made it"] if any(s in dump for s in secrets) else []
    if _CREDENTIAL_URL.search(dump):
        found.append("a URL with credentials")
    return found


def seeded_sync(
    ctx: DriverContext, runner: Runner, databases: Sequence[str], sync: Sequence[str], *, timeout: float
) -> None:
    """The service's schema sync, from the host's seed when one matches and `databases` are still empty;
    otherwise the sync itself (and, on fresh databases, a new seed for the next lab)."""
    for db in databases:
        if not _IDENT.match(db):
            raise ValueError(f"not a plain database name: {db!r}")
    service, sync = service_of(sync), list(sync)
    fresh = all(_tables(runner, db) == 0 for db in databases)
    if not fresh:
        runner.run(sync, timeout=timeout)
        return
    key = seed_key(package_versions(runner, service), databases, sync)
    seed = cache_dir() / f"{service}-{'+'.join(databases)}-{key}.json"
    if _load(runner, seed, databases):
        ctx.progress(f"service/{service}: schema of {', '.join(databases)} from the seed {seed.name}")
        return
    runner.run(sync, timeout=timeout)
    why = _save(ctx, runner, seed, databases, sync)
    ctx.progress(f"service/{service}: " + (f"no seed kept ({why})" if why else f"schema seed {seed.name} kept"))


def _load(runner: Runner, seed: Path, databases: Sequence[str]) -> bool:
    try:
        record = json.loads(seed.read_text())
    except (OSError, ValueError):
        return False
    try:
        for db in databases:
            runner.run([*MYSQL, db], input=record["dumps"][db], timeout=SQL_TIMEOUT)
        version = version_text(runner.run(version_argv(record["sync"]), timeout=SQL_TIMEOUT).stdout)
    except (CommandError, KeyError) as exc:
        LOG.warning("seed %s did not load (%s): running the sync", seed, exc)
        _empty_again(runner, databases)
        return False
    made = version_text(str(record["version"]))
    if version != made:
        LOG.warning("seed %s: version %r after loading, %r when made: running the sync", seed.name, version[-200:],
                    made[-200:])  # fmt: skip
        _empty_again(runner, databases)
        return False
    return True


def _save(ctx: DriverContext, runner: Runner, seed: Path, databases: Sequence[str], sync: Sequence[str]) -> str:
    """Best effort: a seed that cannot be made or must not be shared only costs the next lab its sync. Returns why
    none was kept (empty: kept)."""
    try:
        dumps = {db: runner.run([*MYSQLDUMP, db], timeout=SQL_TIMEOUT).stdout for db in databases}
        version = version_text(runner.run(version_argv(sync), timeout=SQL_TIMEOUT).stdout)
    except CommandError as exc:
        LOG.warning("no seed for %s: %s", seed.name, exc)
        return f"dump or version failed: {str(exc)[:200]}"
    why = sorted({w for dump in dumps.values() for w in leaks(dump, lab_secrets(ctx))})
    if why:
        LOG.warning("no seed for %s: the dump holds %s", seed.name, ", ".join(why))
        return f"the dump holds {', '.join(why)}"
    seed.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(seed, json.dumps({"sync": list(sync), "version": version, "dumps": dumps}), mode=0o600)
    return ""
