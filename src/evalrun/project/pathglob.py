"""Glob patterns and folders of case files, expanded without leaving the project.

``glob.glob`` walks wherever its pattern points (``/**`` is the whole disk) and follows
symlinked folders (a link loop under ``**`` runs for minutes), and evalrun could only refuse
an escape after the walk. Here the pattern's literal prefix is resolved and checked first;
the walk then starts there, never follows a link to a folder (no loops, no way out or
around the project), skips hidden entries as ``glob`` does, and stops with a clear error
after ``MAX_ENTRIES`` entries. Files may be links; the caller checks where they point.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable
from pathlib import Path, PurePath

__all__ = ["MAX_ENTRIES", "PatternError", "has_magic", "split_pattern", "walk_files"]

MAX_ENTRIES = 200_000
"""Directory entries one pattern may visit; a case suite is never this large."""

_MAGIC = re.compile(r"[*?\[]")


class PatternError(ValueError):
    """A pattern cannot be expanded safely; the message says why."""


def has_magic(text: str) -> bool:
    """Whether ``text`` contains glob wildcards (``*``, ``?``, ``[``)."""
    return _MAGIC.search(text) is not None


def split_pattern(pattern: str) -> tuple[str, list[str]]:
    """(literal folder prefix, wildcard segments); refuses ``..`` after the first wildcard."""
    parts = PurePath(pattern).parts
    first = next((i for i, part in enumerate(parts) if has_magic(part)), len(parts))
    rest = list(parts[first:])
    if ".." in rest:
        raise PatternError("'..' after a wildcard could leave the project; put it before the first wildcard")
    literal = str(PurePath(*parts[:first])) if first else "."
    # `**/**` matches what `**` matches, at a far higher cost.
    collapsed: list[str] = []
    for seg in rest:
        if not (seg == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(seg)
    return literal, collapsed


def _segment_matcher(segment: str) -> Callable[[str], bool]:
    rx = re.compile(fnmatch.translate(segment))  # case-sensitive, like glob on POSIX
    hidden_ok = segment.startswith(".")
    return lambda name: (hidden_ok or not name.startswith(".")) and rx.fullmatch(name) is not None


class _Walk:
    def __init__(self, segments: list[str]) -> None:
        self.segments = segments
        self.matchers = [None if s == "**" else _segment_matcher(s) for s in segments]
        self.visited = 0
        self.found: list[Path] = []

    def entries(self, folder: Path) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError:  # unreadable folder: nothing to match there
            return []
        self.visited += len(items)
        if self.visited > MAX_ENTRIES:
            raise PatternError(f"walks more than {MAX_ENTRIES:,} entries; narrow it")
        return items

    def match(self, folder: Path, i: int) -> None:
        if i == len(self.segments):
            return
        matcher = self.matchers[i]
        last = i == len(self.segments) - 1
        items = self.entries(folder)
        if matcher is None:  # "**": zero or more folders
            if last:
                self.everything(folder, items)
                return
            self.match(folder, i + 1)
            for e in items:
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False):
                    self.match(Path(e.path), i)
            return
        for e in items:
            if not matcher(e.name):
                continue
            if last:
                if _is_file(e):
                    self.found.append(Path(e.path))
            elif e.is_dir(follow_symlinks=False):
                self.match(Path(e.path), i + 1)

    def everything(self, folder: Path, items: list[os.DirEntry[str]]) -> None:
        for e in items:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                self.everything(Path(e.path), self.entries(Path(e.path)))
            elif _is_file(e):
                self.found.append(Path(e.path))


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()  # a link to a file counts; where it points is checked later
    except OSError:
        return False


def walk_files(top: Path, segments: list[str]) -> list[Path]:
    """Files under ``top`` matching ``segments`` (``**`` = any depth), sorted; raises ``PatternError``."""
    walk = _Walk(segments or ["**"])
    try:
        walk.match(top, 0)
    except RecursionError:
        raise PatternError("folders nest too deeply to walk") from None
    return sorted(walk.found)
