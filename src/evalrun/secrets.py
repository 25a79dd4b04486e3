"""Keep API keys out of everything evalrun prints, logs or stores.

Two layers: ``scrub(text, secrets)`` removes the given secret values plus anything that
merely *looks* like a credential (``Bearer ...``, ``api_key=...``, ``sk-...``), and a
process-wide registry (``register_secret`` / ``scrub_known``) so every error and log path
can scrub without threading the key through every call.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

__all__ = ["MASK", "clear_known_secrets", "register_secret", "scrub", "scrub_known", "scrub_registered"]

MASK = "***"

# Shorter values would mask ordinary words ("abc" inside "abcdef") and cannot be real keys.
_MIN_SECRET_LEN = 4

# Credential-shaped text, masked even when the value was never registered (a key read by
# litellm from the environment, a header echoed back by a proxy).
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Keep the scheme word so the message still says *what* was there.
    (re.compile(r"(?i)\b(Bearer)\s+[^\s\"',;}]+"), r"\1 " + MASK),
    (re.compile(r"(?i)\b(api[-_]?key[\"']?\s*[=:]\s*[\"']?)[^\s\"',;}]+"), r"\1" + MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), MASK),
)

_lock = threading.Lock()
_known: set[str] = set()


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` with each secret (len >= 4) and credential-shaped tokens masked."""
    # Longest first, so a secret that contains another secret is masked whole.
    for secret in sorted(
        {s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True
    ):
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def register_secret(value: str | None) -> None:
    """Remember ``value`` process-wide so ``scrub_known`` masks it; short/empty values are ignored."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _known.add(value)


def scrub_known(text: str) -> str:
    """``scrub`` with every secret registered in this process."""
    with _lock:
        known = tuple(_known)
    return scrub(text, known)


def scrub_registered(text: str) -> str:
    """``text`` with every registered secret value masked, and nothing else changed.

    For what a model or server *said* (outputs, tool arguments, refusals): a key echoed back
    must never be stored, but credential-*shaped* text ("Bearer tokens are…") is the
    model's answer and is kept, so checks score exactly what was returned.
    """
    with _lock:
        known = tuple(_known)
    for secret in sorted(known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def clear_known_secrets() -> None:
    """Forget all registered secrets (for tests)."""
    with _lock:
        _known.clear()
