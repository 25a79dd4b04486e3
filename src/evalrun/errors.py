"""Exception types that the CLI turns into documented exit codes.

Every user-facing error carries the file, the case id and the field it is about, so the
CLI can print one line that says what and where, never a traceback.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


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
        parts: list[str] = []
        if self.file:
            parts.append(self.file)
        if self.case_id:
            parts.append(f"case {self.case_id}")
        if self.field:
            parts.append(f"field {self.field}")
        parts.append(self.detail)
        return ": ".join(parts)


class CouldNotMeasureError(EvalrunError):
    """The run cannot produce evidence: provider down, key missing, budget exceeded."""

    exit_code = ExitCode.COULD_NOT_MEASURE


class MissingExtraError(CouldNotMeasureError):
    """An optional dependency (an install extra) is needed for what the config asks."""
