"""Runs on a container node as /usr/local/sbin/ebtables (plain python3): Debian 12's ebtables, except that a rule
with `--among-src` is deleted by its number.

Why: neutron's linuxbridge agent protects each port against MAC spoofing with a rule `-i tapX --among-src MAC -j
RETURN` in the chain `neutronMAC-tapX` (nat table), and deletes it by its spec when the port is updated
(arp_protect.py). Debian 12's ebtables-nft 1.8.9 cannot delete such a rule by spec on a newer host kernel (this
host's 6.18): `RULE_DELETE failed (Invalid argument)`, while deleting the same rule by its number works. The agent
retries the delete forever in its loop (tenacity without a stop), so after one port update the compute's agent never
plugs another port and nova's servers there fail after the 300 s vif-plugged wait. Container nodes run on the host's
kernel; VM nodes run Debian's own and do not get this file.

What it does: for `... -D CHAIN <spec with --among-src>`, it lists CHAIN with rule numbers (`-L CHAIN --Ln`), finds
the one rule whose words equal the spec's (MAC addresses compared as numbers: ebtables prints fa:16:3e:0:0:1 for
fa:16:3e:00:00:01, and the among list in its own order) and runs the delete by that number, with the caller's other
options (`-t nat --concurrent`). No such rule, or any other command: the real ebtables runs with the arguments as
given, so its own answer (and exit code) is what the caller sees. The root helper's sudo puts /usr/local/sbin before
/usr/sbin in PATH (secure_path), which is how neutron's `ebtables` finds this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

REAL = "/usr/sbin/ebtables"
AMONG = ("--among-src", "--among-dst")
LIST_TIMEOUT = 60


def mac(text: str) -> str:
    """A MAC address as ebtables prints it (lower-case hex octets without leading zeros); other text unchanged."""
    parts = text.split(":")
    if len(parts) != 6:
        return text
    try:
        return ":".join(f"{int(part, 16):x}" for part in parts)
    except ValueError:
        return text


def words(spec: list[str]) -> list[str]:
    """A rule's words with each among list as its sorted, normalised MAC addresses."""
    out: list[str] = []
    for word in spec:
        among = bool(out) and out[-1] in AMONG
        out.append(",".join(sorted(mac(m) for m in word.split(",") if m)) if among else word)
    return out


def rule_number(listing: str, spec: list[str]) -> int | None:
    """The number of the one rule of `listing` (`ebtables -L CHAIN --Ln` output) equal to `spec`, else None."""
    want = words(spec)
    found = []
    for line in listing.splitlines():
        number, _, rule = line.strip().partition(" ")
        if number.isdigit() and words(rule.split()) == want:
            found.append(int(number))
    return found[0] if len(found) == 1 else None


Run = Callable[..., "subprocess.CompletedProcess[str]"]


def by_number(args: list[str], run: Run = subprocess.run) -> list[str] | None:
    """The argv that deletes the among rule `args` names by its number, or None to run `args` as they are."""
    if "-D" not in args:
        return None
    at = args.index("-D")
    if at + 2 >= len(args) or not any(a in AMONG for a in args[at + 2 :]):
        return None
    options, chain, spec = args[:at], args[at + 1], args[at + 2 :]
    listing = run(
        [REAL, *options, "-L", chain, "--Ln"], capture_output=True, text=True, timeout=LIST_TIMEOUT, check=False
    )
    number = rule_number(listing.stdout, spec) if listing.returncode == 0 else None
    return None if number is None else [REAL, *options, "-D", chain, str(number)]


def main(argv: list[str]) -> None:
    args = argv[1:]
    replacement = by_number(args)
    os.execv(REAL, replacement or [REAL, *args])


if __name__ == "__main__":
    main(sys.argv)
