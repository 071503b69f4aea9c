"""The environment that makes `sudo <service>-rootwrap` start fast in a TCG VM node, and how it reaches sudo.

Every root command of an OpenStack service is a fresh `sudo <service>-rootwrap` python (or, for a privsep context,
`sudo <service>-rootwrap <conf> privsep-helper ...`, which rootwrap execs with its own environment). oslo.rootwrap
imports eventlet only to ask whether it is monkey-patched, and eventlet drags in dnspython (greendns) and, through
distutils.version, setuptools' distutils shim and pkg_resources, which scans every installed distribution: measured
in the TCG VM, 63 s of the 66 s a `cinder-rootwrap ... vgs` took were imports (pkg_resources alone 40 s, dnspython
7 s); with these two variables it took 8.6 s. The service's unit sets them (`environment_line`, inherited by every
sudo it runs) and a sudoers drop-in lets sudo keep them for the service's user only (`sudoers_text`): sudo's
env_reset would drop them otherwise. Used by cinder-volume on the kernel nodes (cinder_kernel.py) and neutron's
agents on VM nodes (neutron_agents.py).
"""

from __future__ import annotations

ROOTWRAP_ENV = {"SETUPTOOLS_USE_DISTUTILS": "stdlib", "EVENTLET_NO_GREENDNS": "yes"}
SUDOERS_MODE = "0440"  # as visudo wants; sudo reads its drop-ins on every call


def sudoers_path(user: str) -> str:
    return f"/etc/sudoers.d/stacklab-{user}-rootwrap"


def sudoers_text(lab: str, user: str) -> str:
    """sudo keeps ROOTWRAP_ENV for `user` (and nobody else) across its env_reset."""
    keep = " ".join(ROOTWRAP_ENV)
    head = f"# written by stacklab for lab {lab}: {user}'s rootwrap without eventlet's slow imports (rootwrap_env.py)"
    return f'{head}\nDefaults:{user} env_keep += "{keep}"\n'


def environment_line() -> str:
    """The unit's `Environment=` line (for a drop-in's [Service] section)."""
    return "Environment=" + " ".join(f'"{k}={v}"' for k, v in ROOTWRAP_ENV.items()) + "\n"
