"""Command line: doctor validate schema plan up down status ssh graph recipes init (verify comes with the suites)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from stacklab.errors import EXIT_APPLY_FAILED, StackLabError

F = TypeVar("F", bound=Callable[..., Any])
LOG = logging.getLogger("stacklab")
EXIT_BUG = 70  # sysexits EX_SOFTWARE: an unexpected exception, i.e. a stacklab bug to report


def _state_root() -> Path:
    return Path(os.environ.get("STACKLAB_STATE", ".stacklab")).resolve()


def _fail(exc: StackLabError, debug: bool) -> NoReturn:
    if debug:
        LOG.exception("failed")
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _guard(func: F) -> F:
    """Map StackLabError to its exit code and a one-paragraph message; tracebacks only with --debug."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except StackLabError as exc:
            _fail(exc, debug)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            # Not a user's error but ours: one line to report (exit 70, EX_SOFTWARE), the traceback with --debug.
            if debug:
                LOG.exception("bug")
            where = ctx.command_path
            click.echo(
                f"bug: {where}: unexpected {type(exc).__name__}: {exc}; please report this "
                "(run with --debug for the traceback)",
                err=True,
            )
            sys.exit(EXIT_BUG)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="stacklab")
def main(debug: bool) -> None:
    """Provision OpenStack storage labs from one YAML file, and prove they work."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# -- validate / schema ---------------------------------------------------------------------------------------
@main.command()
@click.argument("lab_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@_guard
def validate(lab_file: Path, as_json: bool) -> None:
    """Check a lab file: schema and cross-references. Touches nothing."""
    from stacklab.model import LabError, load_lab

    try:
        lab = load_lab(lab_file)
    except LabError as exc:
        if as_json:
            click.echo(json.dumps({"valid": False, "issues": [i.to_json() for i in exc.issues]}, indent=2))
            sys.exit(exc.exit_code)
        raise
    if as_json:
        click.echo(json.dumps({"valid": True, "lab": lab.name}, indent=2))
    else:
        click.echo(f"{lab_file}: lab {lab.name!r} is valid ({len(lab.networks)} networks, {len(lab.nodes)} nodes)")


@main.command()
def schema() -> None:
    """Print the lab file's JSON Schema (for editor completion)."""
    from stacklab.model.lab import Lab

    schema = Lab.model_json_schema(mode="validation")
    schema["properties"].pop("source", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "stacklab lab file"
    click.echo(json.dumps(schema, indent=2))


# -- doctor --------------------------------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--lab", "lab_file", type=click.Path(path_type=Path), help="Apply the lab's pins.")
@_guard
def doctor(as_json: bool, lab_file: Path | None) -> None:
    """Detect what this host can do and which implementation each role will use here, and why."""
    from stacklab.session import host_choices, probe

    report = probe()
    lab = _load(lab_file) if lab_file else None
    choices = host_choices(report, lab)
    if as_json:
        out = {"host": report.to_json(), "choices": {k: _choice_json(c) for k, c in choices.items()}}
        click.echo(json.dumps(out, indent=2, default=str))
        return
    from stacklab.render import render_doctor

    click.echo(render_doctor(report, choices))


def _choice_json(choice: Any) -> dict[str, Any]:
    return {
        "implementation": choice.implementation,
        "reason": choice.reason,
        "alternatives": list(choice.alternatives),
    }


# -- plan / up / down ------------------------------------------------------------------------------------------
def _load(lab_file: Path) -> Any:
    from stacklab.model import load_lab

    return load_lab(lab_file)


@main.command()
@click.argument("lab_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@_guard
def plan(lab_file: Path, as_json: bool) -> None:
    """Show what `up` would change. Read-only."""
    from stacklab.session import Session

    with Session.open(_load(lab_file), _state_root(), command="plan", quiet=as_json, lock=False) as session:
        the_plan = session.engine.plan()
    # Node isolation is a security property of the lab, so plan names it per container node (README, Security).
    from stacklab.drivers.nodes.lxc_config import isolation_of

    isolation = {
        c.resource.id: isolation_of(c.resource.spec)
        for c in the_plan.changes
        if c.resource.kind == "node" and c.resource.spec.get("kind") == "container"
    }
    # Why each `kind: auto` node became a VM node or a container on this host (a kernel path it needs, KVM).
    from stacklab.plan.node_kind import node_kind

    lab = session.lab
    kinds = {f"node/{n}": node_kind(lab, n, session.engine.choices) for n, v in lab.nodes.items() if v.kind == "auto"}
    if as_json:
        kind_json = {rid: {"kind": kind, "why": why} for rid, (kind, why) in kinds.items()}
        click.echo(json.dumps({**the_plan.to_json(), "isolation": isolation, "kinds": kind_json}, indent=2))
    else:
        click.echo(the_plan.render())
        for rid, (kind, why) in kinds.items():
            click.echo(f"  {rid}: {'VM node' if kind == 'vm' else 'container'} ({why})")
        for rid, how in isolation.items():
            click.echo(f"  {rid}: {how}")
        _echo_swift_devices(session, the_plan)


def _echo_swift_devices(session: Any, the_plan: Any) -> None:
    """Swift's devices depend on the host kernel (user xattrs on tmpfs): which kind `up` makes, and why (the
    --json plan has the kind under `choices.swift_devices`)."""
    if any(c.resource.id == "service/swift" for c in the_plan.changes):
        from stacklab.session import host_choices

        choice = host_choices(session.engine.ctx.host, session.lab)["swift_devices"]
        click.echo(f"  service/swift: devices {choice.implementation} ({choice.reason})")


@main.command()
@click.argument("lab_file", type=click.Path(path_type=Path))
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--copies",
    type=int,
    default=None,
    help="Training copies: N isolated copies of the lab in all (the lab itself is copy 1), each in its own netns, "
    "made from the lab's checkpoint `copies` (saved now if missing). Container labs only.",
)
@_guard
def up(lab_file: Path, yes: bool, copies: int | None) -> None:
    """Build the lab (or resume it) until the host matches the lab file."""
    from stacklab.session import Session

    lab = _load(lab_file)
    if copies is not None:
        from stacklab.engine.copies import check_copyable, check_count

        check_count(copies)
        check_copyable(lab, {})  # VM nodes are refused before anything is built
    with Session.open(lab, _state_root(), command="up") as session:
        the_plan = session.engine.plan()
        click.echo(the_plan.render(), err=True)
        if the_plan.pending:
            click.echo(
                f"note: {len(the_plan.pending)} resources are not built by this stacklab yet (listed as pending)",
                err=True,
            )
        result = None
        if the_plan.is_empty:
            click.echo(f"lab {lab.name} is up to date; nothing to do", err=True)
        else:
            if not yes and sys.stdin.isatty() and not click.confirm("Apply this plan?", err=True):
                sys.exit(EXIT_APPLY_FAILED)
            session.remember_host_before_first_up()
            result = session.engine.apply(the_plan)
            session.write_exports()
    if result is not None:
        _report(result, lab.name, "up")
    if copies is not None:  # after the lab's own lock is released: the checkpoint save takes it again
        _up_copies(lab, copies)


# -- training copies (engine/copies.py): LAB#k, each in its own netns ------------------------------------------------
def _copy_target(arg: str) -> tuple[str, Any]:
    """(lab name or file, CopyPlace or None): `LAB#k` (or `LAB-k`) names copy k of LAB; k 1 is LAB itself."""
    from stacklab.engine.copies import CopyPlace, parse_target

    name, index = parse_target(arg, _state_root())
    return name, (CopyPlace(_state_root(), name, index) if index is not None else None)


def _up_copies(lab: Any, copies: int) -> None:
    """Copies 2..N of the lab, each from its checkpoint `copies`; existing copies are left as they are."""
    import time

    from stacklab.engine import copies as cp
    from stacklab.engine.checkpoint import Checkpoints, save_lab
    from stacklab.exec.runner import LocalRunner
    from stacklab.host import netns
    from stacklab.session import Session

    root = _state_root()
    with Session.open(lab, root, command="copies-checkpoint") as session:
        cp.check_copyable(lab, session.engine.choices)
        store = Checkpoints.reader(lab.name, root / lab.name)
        if cp.COPY_CHECKPOINT in {c.name for c in store.saved()}:
            info = store.get(cp.COPY_CHECKPOINT)
        else:
            info = save_lab(session.engine, cp.COPY_CHECKPOINT)
            click.echo(f"checkpoint {info.name} of lab {lab.name} saved ({_checkpoint_times(info.seconds)})", err=True)
    todo = []
    for index in range(2, copies + 1):
        place = cp.CopyPlace(root, lab.name, index)
        if place.record_path.exists():
            click.echo(
                f"copy {place.label} exists; left as it is (`stacklab reset {place.label}` restores it)", err=True
            )
            continue
        todo.append(place)

    def make(place: Any) -> None:  # a thread per copy: setns(2) is per thread, each copy has its own netns and lock
        began = time.monotonic()
        cp.prepare(place, LocalRunner(), info)
        with netns.entered(place.netns), Session.open(lab, place.root, command="copy-up") as copy_session:
            started = cp.materialize_and_start(copy_session.engine, place, info.name)
            _apply_what_remains(started.engine, started.plan, place.label)
        seconds = {**started.seconds, "total": round(time.monotonic() - began, 2)}
        cp.record_seconds(place, seconds)
        click.echo(
            f"copy {place.label} up in netns {place.netns} from checkpoint {info.name} ({_checkpoint_times(seconds)})",
            err=True,
        )

    began = time.monotonic()
    cp.make_at_once(make, todo)
    if len(todo) > 1:
        click.echo(f"{len(todo)} copies of lab {lab.name} made at once in {time.monotonic() - began:.1f}s", err=True)


def _down_copy(place: Any, no_leak_check: bool) -> None:
    """Remove one copy: its resources inside its netns, the netns, then its leak check and its files."""
    from stacklab.engine import copies as cp
    from stacklab.exec.runner import LocalRunner
    from stacklab.host import netns
    from stacklab.session import Session, lab_from_arg

    record = cp.CopyRecord.load(place)
    if (place.lab_dir / "state.json").exists():
        lost = netns.inode_of(record.netns) != record.netns_inode  # a host reboot: its nodes are stopped
        if lost:
            record = cp.renew_netns(place, LocalRunner())
        with netns.entered(record.netns):
            the_lab = lab_from_arg(place.lab, place.root)
            with Session.open(the_lab, place.root, command="down") as session:
                result = cp.destroy_stopped(session.engine) if lost else session.engine.destroy()
                if result.ok:
                    session.finish_down()
            _report(result, place.label, "down")
    cp.remove_netns(place, LocalRunner())
    leaks = [] if no_leak_check else cp.leaks(place, record.netns_inode)
    for leak in leaks:
        click.echo(f"leak: {leak}", err=True)
    if leaks:
        raise StackLabError(f"{len(leaks)} objects of copy {place.label} left behind after down")
    cp.forget(place)
    click.echo(f"copy {place.label} removed; leak check: {'skipped' if no_leak_check else 'clean'}", err=True)


@main.command()
@click.argument("lab", type=str)
@_guard
def reset(lab: str) -> None:
    """Return training copy LAB#k (or LAB itself) to the checkpoint it was made from; other copies run on."""
    import time

    from stacklab.engine import copies as cp
    from stacklab.engine.checkpoint import restore_lab
    from stacklab.host import netns
    from stacklab.session import Session, lab_from_arg

    name, place = _copy_target(lab)
    began = time.monotonic()
    if place is None:
        root = _state_root()
        the_lab = lab_from_arg(name, root)
        label, checkpoint = the_lab.name, cp.COPY_CHECKPOINT
        with Session.open(the_lab, root, command="reset") as session:
            result, engine, the_plan = restore_lab(session.engine, checkpoint, lambda: lab_from_arg(name, root))
            _apply_what_remains(engine, the_plan, label)
    else:
        record = cp.require(place)
        label, checkpoint = place.label, record.checkpoint
        with netns.entered(record.netns):
            the_lab = lab_from_arg(place.lab, place.root)
            with Session.open(the_lab, place.root, command="reset") as session:
                result, engine, the_plan = cp.reset(
                    session.engine, place, record, lambda: lab_from_arg(place.lab, place.root)
                )
                _apply_what_remains(engine, the_plan, label)
    click.echo(
        f"{label} reset to checkpoint {checkpoint} in {time.monotonic() - began:.1f}s "
        f"({_checkpoint_times(result.seconds)}); plan after reset: "
        f"{'empty' if the_plan.is_empty else f'{len(the_plan.actionable)} changes applied'}",
        err=True,
    )


@main.command()
@click.argument("lab", type=str)
@click.option("--no-leak-check", is_flag=True, help="Skip comparing the host with its state before `up`.")
@_guard
def down(lab: str, no_leak_check: bool) -> None:
    """Remove everything the lab created (LAB is a lab file or a lab name), then check nothing leaked.
    LAB#k removes training copy k; LAB removes its copies first."""
    from stacklab.engine.copies import copies_of
    from stacklab.session import Session, lab_from_arg

    _name, place = _copy_target(lab)
    if place is not None:
        _down_copy(place, no_leak_check)
        return
    the_lab = lab_from_arg(lab, _state_root())
    for copy_place in copies_of(_state_root(), the_lab.name):
        _down_copy(copy_place, no_leak_check)
    with Session.open(the_lab, _state_root(), command="down") as session:
        result = session.engine.destroy()
        if result.ok:
            leaks = [] if no_leak_check else session.leak_check()
            session.finish_down()
            if leaks:
                for leak in leaks:
                    click.echo(f"leak: {leak}", err=True)
                raise StackLabError(f"{len(leaks)} objects left behind after down", hint="see the leak lines above")
    _report(result, the_lab.name, "down")
    click.echo(f"lab {the_lab.name} removed; leak check: {'skipped' if no_leak_check else 'clean'}", err=True)


def _apply_what_remains(engine: Any, the_plan: Any, label: str) -> None:
    """After a restore (a checkpoint, a reset, a new copy): apply what the lab's plan still finds, reported as `up`."""
    if not the_plan.is_empty:
        click.echo(the_plan.render(), err=True)
        _report(engine.apply(the_plan), label, "up")


def _report(result: Any, lab: str, command: str) -> None:
    for failure in result.failed:
        click.echo(f"failed: {failure}", err=True)
    for rid, why in result.skipped.items():
        click.echo(f"skipped: {rid}: {why}", err=True)
    if not result.ok:
        click.echo(f"{command} of {lab} failed; state is saved: run `stacklab {command}` again to resume", err=True)
        sys.exit(EXIT_APPLY_FAILED)


# -- verify ------------------------------------------------------------------------------------------------
@main.command()
@click.argument("lab", type=str)
@click.option(
    "--suite",
    "suites",
    multiple=True,
    help="Suite to run (repeatable): a shipped suite's name or a path to your own testinfra file; "
    "default: the lab's verify.suites.",
)
@click.option("-k", "keyword", default=None, help="Only tests matching this pytest -k expression.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait for the lab's lock when an up, down or verify of the lab runs; 0 fails at once.",
)
@_guard
def verify(lab: str, suites: tuple[str, ...], keyword: str | None, wait: float) -> None:
    """Prove the lab works: run the testinfra suites over SSH against its nodes (exit 3 on failure).

    Prints a summary per suite and writes JUnit XML and an HTML report with each test's evidence under the
    lab's state directory (verify/)."""
    from stacklab.session import lab_from_arg
    from stacklab.verify import run_suites

    _name, place = _copy_target(lab)
    if place is not None:  # a training copy: the suites reach its nodes from inside its netns
        from stacklab.engine.copies import require
        from stacklab.host import netns

        record = require(place)
        the_copy = lab_from_arg(place.lab, place.root)
        with netns.entered(record.netns):
            wanted = list(suites) or list(the_copy.verify.suites) or ["infra"]
            run_suites(place.lab, place.root, wanted, keyword=keyword, wait=wait)
        return
    the_lab = lab_from_arg(lab, _state_root())
    wanted = list(suites) or list(the_lab.verify.suites) or ["infra"]
    run_suites(the_lab.name, _state_root(), wanted, keyword=keyword, wait=wait)


# -- status / graph / ssh ------------------------------------------------------------------------------------
@main.command()
@click.argument("lab", type=str)
@click.option("--json", "as_json", is_flag=True)
@_guard
def status(lab: str, as_json: bool) -> None:
    """What the lab has on the host now: every recorded resource, observed live, and node addresses."""
    from stacklab.session import Session, lab_from_arg

    _name, place = _copy_target(lab)
    if place is not None:
        _copy_status(place, as_json)
        return
    the_lab = lab_from_arg(lab, _state_root())
    with Session.open(the_lab, _state_root(), command="status", quiet=True, lock=False) as session:
        rows = session.status()
    copies = _copies_summary(the_lab.name)
    if as_json:
        out: dict[str, Any] = {"lab": the_lab.name, "resources": rows}
        if copies:
            out["copies"] = copies
        click.echo(json.dumps(out, indent=2, default=str))
        return
    from stacklab.render import render_status

    click.echo(render_status(the_lab.name, rows))
    for row in copies:
        nodes = " ".join(f"{node}={state}" for node, state in row.get("nodes", {}).items())
        where = f"netns {row.get('netns')}" + ("" if row.get("netns_present") else " (missing)")
        click.echo(f"copy {row['copy']}: {where}, checkpoint {row.get('checkpoint')}, {nodes or row.get('error', '')}")


def _copies_summary(lab: str) -> list[dict[str, Any]]:
    """Each training copy of the lab: its record and its nodes' states, asked inside its netns."""
    from stacklab.engine import copies as cp
    from stacklab.engine.state import StateStore
    from stacklab.exec.runner import LocalRunner
    from stacklab.host import netns

    rows = []
    for place in cp.copies_of(_state_root(), lab):
        row = cp.summary(place)
        if row.get("netns_present"):
            with netns.entered(place.netns):
                resources = StateStore(place.root, lab).resources
                row["nodes"] = cp.node_states(place, LocalRunner(), resources)
        rows.append(row)
    return rows


def _copy_status(place: Any, as_json: bool) -> None:
    from stacklab.engine.copies import require
    from stacklab.host import netns
    from stacklab.render import render_status
    from stacklab.session import Session, lab_from_arg

    record = require(place)
    the_lab = lab_from_arg(place.lab, place.root)
    with (
        netns.entered(record.netns),
        Session.open(the_lab, place.root, command="status", quiet=True, lock=False) as session,
    ):
        rows = session.status()
    if as_json:
        click.echo(json.dumps({"lab": the_lab.name, "copy": place.label, "resources": rows}, indent=2, default=str))
        return
    click.echo(render_status(place.label, rows))


@main.command()
@click.argument("lab_file", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["dot", "svg", "png"]), default="dot", show_default=True)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (svg/png: LAB.FORMAT)."
)
@_guard
def graph(lab_file: Path, fmt: str, output: Path | None) -> None:
    """Draw the lab: networks, nodes, storage targets and services (svg/png need Graphviz's `dot`)."""
    from stacklab.exec.runner import LocalRunner
    from stacklab.lab_graph import lab_dot, render
    from stacklab.plan.expand import expand

    lab = _load(lab_file)
    text = lab_dot(lab.name, expand(lab))
    if fmt == "dot" and output is None:
        click.echo(text, nl=False)
        return
    target = output or Path(f"{lab.name}.{fmt}")
    if fmt == "dot":
        target.write_text(text)
    else:
        render(text, fmt, target, LocalRunner())
    click.echo(f"wrote {target}", err=True)


# -- recipes / init ------------------------------------------------------------------------------------------
@main.command()
@click.option(
    "--lab",
    "lab_path",
    type=click.Path(path_type=Path),
    help="A lab file or directory whose images/ (beside or above it) comes first; default: the current directory.",
)
def recipes(lab_path: Path | None) -> None:
    """List the image recipes a lab can name, and where each comes from (lab tree, user config, built-in)."""
    from stacklab.model.paths import IMAGES, list_recipes, search_dirs

    base = (lab_path.parent if lab_path.is_file() else lab_path) if lab_path else Path.cwd()
    for folder in search_dirs(IMAGES, base):
        click.echo(f"# {folder.origin}: {folder.path}")
    for entry in list_recipes(base):
        hides = f"  (hides {', '.join(entry.shadows)})" if entry.shadows else ""
        click.echo(f"{entry.name:<24} {entry.origin:<9} {entry.path}{hides}")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--from", "template", default="containers-3", show_default=True, help="Built-in lab to start from.")
@click.option("--name", "lab_name", default=None, help="Lab name (default: the built-in lab's).")
@click.option("--force", is_flag=True, help="Overwrite DIRECTORY/lab.yml if it exists.")
@_guard
def init(directory: Path, template: str, lab_name: str | None, force: bool) -> None:
    """Write a starter lab file DIRECTORY/lab.yml from a built-in lab, and say how to run it."""
    from stacklab.model.starter import write_starter

    written = write_starter(directory, template, lab_name=lab_name, force=force)
    lab = _load(written)
    click.echo(f"wrote {written} (lab {lab.name!r} from the built-in {template!r} lab, built-in recipes)")
    click.echo("next (as root):")
    click.echo(f"  stacklab validate {written}")
    click.echo(f"  stacklab up {written}")
    click.echo(f"  stacklab verify {written}")
    click.echo(f"  stacklab down {lab.name}")
    click.echo(f"state goes to {_state_root()} ($STACKLAB_STATE); run the commands from this directory, or set it.")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("lab", type=str)
@click.argument("node", type=str)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_guard
def ssh(lab: str, node: str, command: tuple[str, ...]) -> None:
    """Open a shell on a node (or run COMMAND there) with the lab's key."""
    from stacklab.session import lab_from_arg, ssh_argv

    _name, place = _copy_target(lab)
    if place is not None:  # a training copy: ssh runs inside its netns
        from stacklab.engine.copies import require
        from stacklab.host import netns

        record = require(place)
        argv = ssh_argv(place.lab, node, place.root, list(command))
        netns.enter_for_good(record.netns)
        os.execvp(argv[0], argv)
    the_lab = lab_from_arg(lab, _state_root())
    argv = ssh_argv(the_lab.name, node, _state_root(), list(command))
    os.execvp(argv[0], argv)


# -- checkpoint (engine/checkpoint.py) ---------------------------------------------------------------------------
@main.group()
def checkpoint() -> None:
    """Whole-lab snapshots of a converged lab: save, restore, list, delete (container nodes)."""


def _checkpoint_times(seconds: dict[str, float]) -> str:
    return ", ".join(f"{phase} {value:.1f}s" for phase, value in seconds.items())


@checkpoint.command("save")
@click.argument("lab", type=str)
@click.argument("name", type=str)
@_guard
def checkpoint_save(lab: str, name: str) -> None:
    """Stop the nodes in reverse dependency order, copy the lab (node roots, data, state), start them again."""
    from stacklab.engine.checkpoint import save_lab, validate_name
    from stacklab.session import Session, lab_from_arg

    validate_name(name)
    the_lab = lab_from_arg(lab, _state_root())
    with Session.open(the_lab, _state_root(), command="checkpoint-save") as session:
        info = save_lab(session.engine, name)
    click.echo(
        f"checkpoint {name} of lab {the_lab.name} saved: {len(info.nodes)} nodes, "
        f"{info.bytes_on_disk / 2**20:.0f} MiB on disk ({_checkpoint_times(info.seconds)})",
        err=True,
    )


@checkpoint.command("restore")
@click.argument("lab", type=str)
@click.argument("name", type=str)
@_guard
def checkpoint_restore(lab: str, name: str) -> None:
    """Put the lab back as it was saved (same addresses, keys, data), then apply what its plan still finds."""
    from stacklab.engine.checkpoint import restore_lab, validate_name
    from stacklab.session import Session, lab_from_arg

    validate_name(name)
    the_lab = lab_from_arg(lab, _state_root())
    with Session.open(the_lab, _state_root(), command="checkpoint-restore") as session:
        result, engine, the_plan = restore_lab(session.engine, name, lambda: lab_from_arg(the_lab.name, _state_root()))
        _apply_what_remains(engine, the_plan, the_lab.name)
    click.echo(
        f"lab {the_lab.name} restored to checkpoint {name} ({_checkpoint_times(result.seconds)}); "
        f"plan after restore: {'empty' if the_plan.is_empty else f'{len(the_plan.actionable)} changes applied'}",
        err=True,
    )


@checkpoint.command("list")
@click.argument("lab", type=str)
@click.option("--json", "as_json", is_flag=True)
@_guard
def checkpoint_list(lab: str, as_json: bool) -> None:
    """The lab's complete checkpoints, oldest first."""
    import time

    from stacklab.engine.checkpoint import Checkpoints
    from stacklab.session import lab_from_arg

    the_lab = lab_from_arg(lab, _state_root())
    saved = Checkpoints.reader(the_lab.name, _state_root() / the_lab.name).saved()
    if as_json:
        click.echo(json.dumps({"lab": the_lab.name, "checkpoints": [c.to_json() for c in saved]}, indent=2))
        return
    for info in saved:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.created_at))
        click.echo(f"{info.name}\t{when}\t{len(info.nodes)} nodes\t{info.bytes_on_disk / 2**20:.0f} MiB")
    if not saved:
        click.echo(f"lab {the_lab.name} has no checkpoints", err=True)


@checkpoint.command("delete")
@click.argument("lab", type=str)
@click.argument("name", type=str)
@_guard
def checkpoint_delete(lab: str, name: str) -> None:
    """Remove one checkpoint of the lab."""
    from stacklab.engine.checkpoint import Checkpoints, validate_name
    from stacklab.engine.state import lab_lock
    from stacklab.session import lab_from_arg

    validate_name(name)
    the_lab = lab_from_arg(lab, _state_root())
    lab_dir = _state_root() / the_lab.name
    with lab_lock(lab_dir):
        Checkpoints.reader(the_lab.name, lab_dir).delete(name)
    click.echo(f"checkpoint {name} of lab {the_lab.name} deleted", err=True)
