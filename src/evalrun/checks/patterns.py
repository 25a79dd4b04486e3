"""Regular expressions on model output, with the check's time budget.

User patterns (the ``regex`` check) and JSON Schema patterns (``pattern``,
``patternProperties``, and the ``additionalProperties`` / ``unevaluatedProperties`` logic
that consults them) run on the ``regex`` engine with ``timeout=`` the budget left, so
``^(a+)+$`` against a hostile output is a check error after the budget, not hours of
backtracking. ``regex`` in its default VERSION0 mode matches like ``re``; patterns are
still validated with ``re`` first, so what a config may contain does not change.
"""

from __future__ import annotations

import re
import threading
from types import ModuleType
from typing import Any

import regex

from evalrun.checks.budget import CheckTimeout, remaining

__all__ = ["FLAG_LETTERS", "BoundedPattern", "compile_pattern", "install_jsonschema_patterns"]

FLAG_LETTERS: dict[str, int] = {
    "i": regex.IGNORECASE,
    "m": regex.MULTILINE,
    "s": regex.DOTALL,
    "x": regex.VERBOSE,
}
"""The flag letters the ``regex`` check accepts."""


class BoundedPattern:
    """A compiled pattern whose matches stop when the current check's budget runs out."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        re.compile(pattern, flags)  # the accepted syntax stays exactly that of `re`
        self._compiled = regex.compile(pattern, flags | regex.VERSION0)
        self.pattern = pattern

    def search(self, text: str) -> Any:
        """``search`` under the budget; raises ``CheckTimeout`` when it is spent."""
        try:
            return self._compiled.search(text, timeout=remaining())
        except TimeoutError:
            raise CheckTimeout from None

    def fullmatch(self, text: str) -> Any:
        """``fullmatch`` under the budget; raises ``CheckTimeout`` when it is spent."""
        try:
            return self._compiled.fullmatch(text, timeout=remaining())
        except TimeoutError:
            raise CheckTimeout from None


def compile_pattern(pattern: str, flags: int = 0) -> BoundedPattern:
    """Compile ``pattern``; raises ``re.error`` (or ``regex.error``) when it is invalid."""
    return BoundedPattern(pattern, flags)


class _BoundedRe:
    """Stands in for the ``re`` module inside jsonschema's keyword code.

    Inside a budgeted check, ``search`` runs on ``regex`` with the budget left; anywhere
    else (another library validating in the same process) it is plain ``re.search``.
    """

    def search(self, pattern: Any, string: Any, flags: int = 0) -> Any:
        left = remaining()
        if left is None or not isinstance(pattern, str) or not isinstance(string, str):
            return re.search(pattern, string, flags)
        try:
            return regex.search(pattern, string, flags | regex.VERSION0, timeout=left)
        except TimeoutError:
            raise CheckTimeout from None

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)


_install_lock = threading.Lock()
# Where jsonschema (4.x) calls re.search with a schema's pattern on instance data.
_JSONSCHEMA_MODULES = ("jsonschema._keywords", "jsonschema._utils", "jsonschema._legacy_keywords")


def install_jsonschema_patterns() -> list[str]:
    """Route jsonschema's pattern matching through the budget; returns the patched modules.

    Idempotent. A module that no longer uses ``re`` the same way is left alone (and the
    tests, which assert the budget stops a schema ``pattern``, notice).
    """
    import importlib

    with _install_lock:
        patched: list[str] = []
        for name in _JSONSCHEMA_MODULES:
            try:
                module: ModuleType = importlib.import_module(name)
            except ImportError:
                continue
            current = getattr(module, "re", None)
            if current is re:
                module.re = _BoundedRe()  # type: ignore[attr-defined]
            if isinstance(getattr(module, "re", None), _BoundedRe):
                patched.append(name)
        return patched
