"""Exception types that the CLI turns into documented exit codes.

Every user-facing error carries the file, the case id and the field it is about, so the
CLI can print one line that says what and where, never a traceback.
"""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path

MAX_ID_CHARS = 80
"""Longest case id (or field) shown in a message; longer ones are clipped in the middle."""

MAX_DETAIL_CHARS = 1000
"""Longest explanation in one error line."""

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clip(text: str, limit: int = MAX_ID_CHARS) -> str:
    """``text`` on one line and at most ``limit`` characters: control characters are shown
    escaped, and the middle of a long text is replaced by ``…`` (both ends stay readable)."""
    text = _CONTROL_RE.sub(lambda m: repr(m.group(0))[1:-1], text)
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 3
    tail = limit - 1 - head
    return f"{text[:head]}…{text[-tail:]}" if tail > 0 else text[: limit - 1] + "…"


class ExitCode(IntEnum):
    """Public, documented process exit codes of `evalrun`."""

    PASSED = 0
    REGRESSION = 1
    CONFIG_ERROR = 2
    INCONCLUSIVE = 3
    COULD_NOT_MEASURE = 4
    INTERRUPTED = 130


class EvalrunError(Exception):
    """Base class for errors evalrun reports to the user without a traceback."""

    exit_code: ExitCode = ExitCode.CONFIG_ERROR


class UserInputError(EvalrunError):
    """A user file (config, suite, case file, schema, template) is invalid.

    The message renders as ``FILE: case CASE_ID: field FIELD: what is wrong``.
    """

    exit_code = ExitCode.CONFIG_ERROR

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        case_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.case_id = case_id
        self.field = field
        self.detail = message
        super().__init__(self.render())

    def render(self) -> str:
        """One line: ids and fields clipped, control characters escaped (see ``clip``)."""
        parts: list[str] = []
        if self.file:
            parts.append(clip(self.file, 4096))
        if self.case_id:
            parts.append(f"case {clip(self.case_id)}")
        if self.field:
            parts.append(f"field {clip(self.field, 2 * MAX_ID_CHARS)}")
        parts.append(clip(self.detail, MAX_DETAIL_CHARS))
        return ": ".join(parts)


class CouldNotMeasureError(EvalrunError):
    """The run cannot produce evidence: provider down, key missing, budget exceeded."""

    exit_code = ExitCode.COULD_NOT_MEASURE


class PreflightError(CouldNotMeasureError):
    """A side's first call (its preflight) failed in a way no retry or other call can fix:
    a wrong key, an unknown provider or model, a server that is not there. The run stops
    before the remaining calls (and the other side's, when it had not started) are paid for."""


class MissingExtraError(CouldNotMeasureError):
    """An optional dependency (an install extra) is needed for what the config asks."""
