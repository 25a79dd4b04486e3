"""Canonical JSON and the hashes built on it: one definition for fingerprints, request keys,
run folder names and journal lines."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "stable_hash"]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the basis of every hash evalrun takes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(value: Any, length: int = 64) -> str:
    """sha256 hex of the canonical JSON of ``value`` (its first ``length`` characters)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]
