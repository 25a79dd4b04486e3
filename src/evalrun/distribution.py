"""What to install: the distribution name on the package index, and pinned requirements.

The command and the import name are ``evalrun``, but the index's ``evalrun`` is an unrelated
project (0.4.2, "a regression-testing toolkit for tool-using AI agents"), so this project
is published as ``evalrun-gate``. Every install line evalrun prints or scaffolds comes from
here, pinned to the running version, so a team installs exactly the evalrun it tried.
"""

from __future__ import annotations

from evalrun import __version__

__all__ = ["DISTRIBUTION", "install_command", "requirement"]

DISTRIBUTION = "evalrun-gate"
"""The name ``pip install`` takes (``pip install evalrun`` installs someone else's project)."""


def requirement(extra: str | None = "local") -> str:
    """A pinned requirement of this version, e.g. ``evalrun-gate[local]==0.1.0``."""
    return f"{DISTRIBUTION}{f'[{extra}]' if extra else ''}=={__version__}"


def install_command(extra: str | None = "local") -> str:
    """The shell line installing this version: ``pip install 'evalrun-gate[local]==0.1.0'``."""
    return f"pip install '{requirement(extra)}'"
