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


# Aliases share nodes: a few hundred bytes can expand to billions of values once hashed or
# serialised (an "alias bomb"). No real config comes near this many expanded nodes.
MAX_EXPANDED_NODES = 1_000_000


class _ValueError(Exception):
    """A constructor rejected a value; carries the line it is on."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Number of nodes the document has once every alias is expanded (memoised per node)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a cycle counts once; PyYAML's SafeLoader cannot build cycles into data anyway
    total = 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, memo) + _expanded_size(v, memo)
            if total > MAX_EXPANDED_NODES:
                break
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            total += _expanded_size(item, memo)
            if total > MAX_EXPANDED_NODES:
                break
    memo[key] = total
    return total


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses alias bombs and reports bad tagged values with their line."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise yaml.YAMLError(
                f"the document expands to more than {MAX_EXPANDED_NODES:,} values through aliases (an alias bomb?)"
            )
        return node

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError, IndexError, KeyError, AttributeError) as exc:
            if isinstance(exc, _ValueError):
                raise
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            mark = getattr(node, "start_mark", None)
            raise _ValueError(first, mark.line + 1 if mark is not None else None) from None


def load_yaml(path: Path, *, what: str = "YAML file") -> Any:
    """Parse a YAML file safely; syntax errors name the line and column."""
    text = read_text(path, what=what)
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except RecursionError:
        raise UserInputError("YAML error: nested too deeply", file=path) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = exc.problem or str(exc)
        raise UserInputError(f"YAML syntax error at {where}{problem}", file=path) from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"YAML error: {exc}", file=path) from None
    except _ValueError as exc:
        # PyYAML's constructors raise plain errors for bad tagged values (!!int many, 2023-02-30).
        where = f" at line {exc.line}" if exc.line is not None else ""
        raise UserInputError(f"YAML value error{where}: {exc}", file=path) from None
    except (ValueError, TypeError, OverflowError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(f"YAML value error: {first}", file=path) from None


def resolve_inside(base_dir: Path, relative: str, *, file: Path, field: str, root: Path) -> Path:
    """Resolve a path a user wrote relative to ``base_dir``, refusing to leave ``root``.

    Configs may only reference files inside their project (``root``): a path that walks
    out with ``../../..`` or is absolute elsewhere is a user error, not a silent read.
    """
    try:
        candidate = Path(relative)
        resolved = (candidate if candidate.is_absolute() else base_dir / candidate).resolve()
    except (ValueError, OSError) as exc:  # NUL bytes, symlink loops
        raise UserInputError(f"path {relative!r} is not usable: {exc}", file=file, field=field) from None
    root_resolved = root.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise UserInputError(
            f"path {relative!r} points outside the project folder {root_resolved}",
            file=file,
            field=field,
        )
    return resolved
