"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests.support` must import the same way under `pytest` and `python -m pytest`
# (only the latter puts the repository root on sys.path).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support.openai_server import OpenAIServer  # noqa: E402


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A fresh OpenAI-compatible server on 127.0.0.1 (default: directive-reading echo).

    Script it with ``openai_server.behaviour = fn`` or ``openai_server.use_script({...})``;
    assert on ``openai_server.count`` / ``.requests`` / ``.authorizations``.
    """
    with OpenAIServer() as server:
        yield server
