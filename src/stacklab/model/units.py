"""Sizes in lab files: '512MiB', '4GiB', '1.5G' or a bare number of MiB."""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS = {"": 1, "m": 1, "mb": 1, "mib": 1, "g": 1024, "gb": 1024, "gib": 1024, "t": 1024**2, "tib": 1024**2}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
# 1 EiB: far above any host; bounds the number before it reaches arithmetic elsewhere (a float would overflow).
MAX_MIB = 1024**4


def parse_size_mib(value: object) -> int:
    """Return a size in MiB; raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("a size, not a boolean")
    if isinstance(value, int):
        mib = value
    else:
        match = _SIZE.match(str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"cannot read {str(value)[:40]!r} as a size; write e.g. 512MiB, 4GiB or a number of MiB")
        mib = int(Decimal(match.group(1)) * _UNITS[unit])  # Decimal: 400 digits do not overflow
    if mib <= 0:
        raise ValueError("a size must be positive")
    if mib > MAX_MIB:
        raise ValueError("a size above 1 EiB is not a lab size")
    return mib
