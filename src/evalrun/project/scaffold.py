"""`evalrun init`: copy a working example project into a folder.

The template files live in ``evalrun/scaffold_files/`` (package data) and are copied byte
for byte, except that ``@EVALRUN_REQUIREMENT@`` becomes the pinned requirement of this
version (``evalrun-gate[local]==X.Y.Z``, see ``evalrun.distribution``): every install line
of the project installs exactly the evalrun that wrote it. A path component spelled
``dot-NAME`` is written as ``.NAME``: packaging globs skip hidden folders, so ``.github/``
is stored as ``dot-github/``.

The project it writes validates as is (``evalrun validate evals/baseline.yaml
evals/candidate.yaml``) and runs on the embedded model.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

from evalrun.distribution import install_command, requirement
from evalrun.errors import UserInputError

__all__ = ["SCAFFOLD_DIR", "init_project", "next_steps", "scaffold_manifest"]

SCAFFOLD_DIR = "scaffold_files"
REQUIREMENT_PLACEHOLDER = b"@EVALRUN_REQUIREMENT@"
"""Replaced by ``evalrun.distribution.requirement()`` in every file written."""
_DOT_PREFIX = "dot-"


def _target_name(part: str) -> str:
    return "." + part.removeprefix(_DOT_PREFIX) if part.startswith(_DOT_PREFIX) else part


def _walk(
    node: Traversable, rel: PurePosixPath, out: list[tuple[PurePosixPath, Traversable]]
) -> None:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        # Editor and OS droppings (.DS_Store, __pycache__) are never part of the template.
        if child.name.startswith(".") or child.name == "__pycache__":
            continue
        child_rel = rel / _target_name(child.name)
        if child.is_dir():
            _walk(child, child_rel, out)
        elif child.is_file():
            out.append((child_rel, child))


def scaffold_manifest() -> list[tuple[PurePosixPath, Traversable]]:
    """Every template file as (path relative to the new project, resource), sorted."""
    root = files("evalrun").joinpath(SCAFFOLD_DIR)
    if not root.is_dir():  # a broken install (package data not shipped)
        raise UserInputError(
            f"evalrun's project template ({SCAFFOLD_DIR}/) is missing from the installation"
        )
    out: list[tuple[PurePosixPath, Traversable]] = []
    _walk(root, PurePosixPath(), out)
    return out


def init_project(target: Path, *, force: bool = False) -> list[Path]:
    """Write the example project into ``target`` (created if needed); return the files written.

    Refuses, before writing anything, when a file to be written already exists, unless
    ``force`` (then existing files are overwritten; other files in ``target`` are left alone).
    Raises ``UserInputError`` naming the first existing file, or when ``target`` or a
    folder on the way is a file.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise UserInputError("exists and is not a folder", file=target)
    manifest = scaffold_manifest()
    plan = [(target.joinpath(*rel.parts), res) for rel, res in manifest]
    # Check everything first so a refusal never leaves a half-written project behind.
    for dest, _ in plan:
        if dest.is_dir():
            raise UserInputError(
                "exists and is a folder; evalrun init would write a file here", file=dest
            )
        if dest.exists() and not force:
            raise UserInputError(
                "already exists; evalrun init will not overwrite it (use --force)", file=dest
            )
        for parent in dest.parents:
            if parent.exists() and not parent.is_dir():
                raise UserInputError("exists and is not a folder", file=parent)
    written: list[Path] = []
    for dest, res in plan:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(res.read_bytes().replace(REQUIREMENT_PLACEHOLDER, requirement().encode()))
        written.append(dest)
    return written


def next_steps(target: Path) -> str:
    """What to run after ``init`` (for the CLI to print)."""
    where = "" if Path(target) == Path() else f"cd {target}\n  "
    return (
        "Next steps:\n"
        f"  {where}{install_command()}\n"
        "  evalrun validate evals/baseline.yaml evals/candidate.yaml\n"
        "  evalrun compare evals/baseline.yaml evals/candidate.yaml\n"
        "See EVALRUN.md for the files, the version labels and the exit codes."
    )
