"""Reading user YAML/JSON files into plain data, with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evalrun.errors import UserInputError

# A user file larger than this is almost certainly a mistake (a log, a dataset dump).
MAX_USER_FILE_BYTES = 20 * 1024 * 1024


def read_text(path: Path, *, what: str = "file") -> str:
    """Read a UTF-8 user file, turning every failure into a one-line UserInputError."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UserInputError(f"{what} not found", file=path) from None
    except OSError as exc:
        raise UserInputError(f"cannot read {what}: {exc.strerror}", file=path) from None
    if path.is_dir():
        raise UserInputError(f"expected a {what}, found a folder", file=path)
    if size > MAX_USER_FILE_BYTES:
        raise UserInputError(
            f"{what} is {size // (1024 * 1024)} MiB, over the {MAX_USER_FILE_BYTES // (1024 * 1024)} MiB limit",
            file=path,
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"not valid UTF-8 (byte {exc.start})", file=path) from None
    except OSError as exc:
        raise UserInputError(f"cannot read {what}: {exc.strerror}", file=path) from None


def load_yaml(path: Path, *, what: str = "YAML file") -> Any:
    """Parse a YAML file safely; syntax errors name the line and column."""
    text = read_text(path, what=what)
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = exc.problem or str(exc)
        raise UserInputError(f"YAML syntax error at {where}{problem}", file=path) from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"YAML error: {exc}", file=path) from None


def resolve_inside(base_dir: Path, relative: str, *, file: Path, field: str, root: Path) -> Path:
    """Resolve a path a user wrote relative to ``base_dir``, refusing to leave ``root``.

    Configs may only reference files inside their project (``root``): a path that walks
    out with ``../../..`` or is absolute elsewhere is a user error, not a silent read.
    """
    candidate = Path(relative)
    resolved = (candidate if candidate.is_absolute() else base_dir / candidate).resolve()
    root_resolved = root.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise UserInputError(
            f"path {relative!r} points outside the project folder {root_resolved}",
            file=file,
            field=field,
        )
    return resolved
