"""`stacklab init`: a starter lab file copied from a built-in lab (the package's copy of labs/)."""

from __future__ import annotations

import re
from pathlib import Path

from stacklab.errors import EXIT_INVALID_LAB, StackLabError
from stacklab.model.load import load_lab_text
from stacklab.model.paths import LABS, builtin_dir

LAB_FILE = "lab.yml"
_NAME_LINE = re.compile(r"^name:[^\n]*$", re.MULTILINE)


class StarterError(StackLabError):
    """Bad `init` arguments (unknown built-in lab, bad name, file exists); nothing was written."""

    exit_code = EXIT_INVALID_LAB


def builtin_labs() -> list[str]:
    return sorted(p.stem for p in builtin_dir(LABS).glob("*.yml"))


def starter_text(template: str, lab_name: str | None = None) -> str:
    """The built-in lab `template`, renamed to `lab_name` (comments kept), validated against the built-ins."""
    source = builtin_dir(LABS) / f"{template}.yml"
    if not source.is_file():
        raise StarterError(f"no built-in lab {template!r}", hint=f"one of: {', '.join(builtin_labs())}")
    text = source.read_text()
    if lab_name is not None:
        text, count = _NAME_LINE.subn(f"name: {lab_name}", text, count=1)
        if count != 1:
            raise StarterError(f"built-in lab {template!r} has no top-level name: line to rename")
    # Validate where the file will live: no lab tree there, so recipes resolve to the user's and built-ins.
    load_lab_text(text, f"{template}.yml (renamed {lab_name})" if lab_name else f"{template}.yml", base_dir=None)
    return text


def write_starter(directory: Path, template: str, *, lab_name: str | None = None, force: bool = False) -> Path:
    """Write DIRECTORY/lab.yml; refuses to overwrite unless `force`. Returns the written path."""
    text = starter_text(template, lab_name)
    target = directory / LAB_FILE
    if target.exists() and not force:
        raise StarterError(f"{target} exists", hint="pass --force to overwrite it, or choose another directory")
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


_CIDR_LINE = re.compile(r"cidr: (\d+\.\d+\.\d+\.0/24)")


def unique_copy(text: str, prefix: str, *, first_octet: int = 100) -> tuple[str, str]:
    """(name, text): a lab file's text under a fresh name `<prefix>-<6 hex>` with a random /24 per network
    (10.<first_octet + 40 * i + 0..39>.<0..249>.0/24; fixed addresses in it move along), so copies of one lab run
    side by side (the integration tests' and benchmarks' labs). Comments and layout are kept; not validated here."""
    import secrets

    name = f"{prefix}-{secrets.token_hex(3)}"
    text = _NAME_LINE.sub(f"name: {name}", text, count=1)
    octet = first_octet + secrets.randbelow(40)
    for index, cidr in enumerate(sorted(set(_CIDR_LINE.findall(text)))):
        # the /24's prefix, so that fixed node addresses in it move with it
        text = text.replace(cidr.removesuffix("0/24"), f"10.{octet + 40 * index}.{secrets.randbelow(250)}.")
    return name, text
