"""Strict JSON for model outputs, and a linear-time scan for JSON embedded in prose.

The strict rule, one for every place evalrun parses model output (``json``,
``json_schema`` and ``tool_call`` arguments): the text is JSON (RFC 8259) and every number
in it is representable. Integers are exact at any size (beyond Python's 4,300-digit
``int`` conversion limit too); any other number must be a finite double. So ``NaN``,
``Infinity`` and a literal that overflows to infinity (``1e999999``) are not JSON, while a
5,001-digit integer is.

The lenient scan looks for the longest JSON object or array embedded in text. Each
candidate is decoded from a window that starts small and grows only while the parse runs
into the window's end, so an output like ``"x[" * 500_000`` costs linear time instead of
the quadratic time of decoding (and locating errors in) the whole remaining text at
every bracket.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from typing import Any

__all__ = ["NotJson", "find_embedded", "find_fenced", "loads_strict"]

_FENCE_RE = re.compile(r"```[ \t]*(?:json)?[ \t]*\r?\n?(.*?)```", re.DOTALL | re.IGNORECASE)
# An opening bracket followed (after JSON whitespace) by something that can continue a JSON
# value: prose brackets ("see [x]", "x[" * 500_000) are skipped without a decode attempt.
_OPEN_RE = re.compile(r'\[(?=[ \t\n\r]*[\]\[{"\-0-9tfn])|\{(?=[ \t\n\r]*[}"])')
_FIRST_WINDOW = 16
# An error this close to a window's end may be the window's fault (a cut number, literal
# or escape): decode again with a larger window before believing it.
_EDGE = 8


class NotJson(ValueError):
    """The text is not strict JSON; the message says why."""


class _BigInt(int):
    """An integer beyond the str-digits limit; it shows its size, not its digits."""

    _digits: int

    def __repr__(self) -> str:
        return f"<integer of {self._digits:,} digits>"

    __str__ = __repr__


def _digits_to_int(digits: str, chunk: int) -> int:
    # Divide and conquer: int() of up to `chunk` digits at a time (the limit exists because
    # CPython 3.11 converts in quadratic time), then combine with multiplications.
    if len(digits) <= chunk:
        return int(digits)
    low = len(digits) // 2
    high_part: int = _digits_to_int(digits[:-low], chunk) * 10**low
    return high_part + _digits_to_int(digits[-low:], chunk)


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # over sys.get_int_max_str_digits(): still valid JSON
        limit = sys.get_int_max_str_digits() or len(text)
        negative = text.startswith("-")
        magnitude = _digits_to_int(text.lstrip("-"), max(limit - 1, 1))
        value = _BigInt(-magnitude if negative else magnitude)
        value._digits = len(text) - negative
        return value


class _Decoder(json.JSONDecoder):
    """A decoder that notes the first number that is not finite (one per parse)."""

    def __init__(self) -> None:
        self.non_finite: str | None = None
        super().__init__(parse_float=self._float, parse_int=_parse_int, parse_constant=self._constant)

    def _float(self, text: str) -> float:
        value = float(text)
        if math.isinf(value) and self.non_finite is None:
            self.non_finite = text
        return value

    def _constant(self, text: str) -> float:
        if self.non_finite is None:
            self.non_finite = text
        return float(text)  # NaN, Infinity, -Infinity

    def reject_non_finite(self) -> None:
        if self.non_finite is not None:
            raise NotJson(f"{self.non_finite[:40]} is not a finite number (JSON numbers must be finite)")


_local = threading.local()


def _decoder() -> _Decoder:
    # One per thread: building a decoder (and its C scanner) costs more than a small parse.
    decoder: _Decoder | None = getattr(_local, "decoder", None)
    if decoder is None:
        decoder = _local.decoder = _Decoder()
    decoder.non_finite = None
    return decoder


def loads_strict(text: str) -> Any:
    """Parse ``text`` under the strict rule; raises ``ValueError`` (``NotJson`` or
    ``json.JSONDecodeError``) or ``RecursionError``."""
    decoder = _decoder()
    value = decoder.decode(text)
    decoder.reject_non_finite()
    return value


def find_fenced(text: str) -> tuple[Any] | None:
    """The first code-fenced block that is strict JSON, as a 1-tuple; None if there is none."""
    if "```" not in text:
        return None
    for m in _FENCE_RE.finditer(text):
        body = m.group(1).strip()
        if not body:
            continue
        try:
            return (loads_strict(body),)
        except (ValueError, RecursionError):
            continue
    return None


def _decode_at(decoder: _Decoder, text: str, start: int) -> tuple[bool, Any, int]:
    """Decode the value opening at ``start``: (True, value, end) or (False, None, resume).

    ``resume`` is where the scan continues: the failure point (what precedes it was valid
    JSON, so brackets in it are nested values), or the candidate's end when it parsed but
    holds a non-finite number (a fragment of invalid JSON must not pass as lenient JSON).
    """
    n = len(text)
    window = _FIRST_WINDOW
    while True:
        stop = min(n, start + window)
        chunk = text[start:stop]
        decoder.non_finite = None
        try:
            value, end = decoder.raw_decode(chunk, 0)
        except json.JSONDecodeError as exc:
            cut = stop < n and (exc.pos >= len(chunk) - _EDGE or exc.msg.startswith("Unterminated string"))
            if cut:
                window *= 4
                continue
            return False, None, start + max(exc.pos, 1)
        # An object or array ends at its closing bracket: more text cannot extend it.
        if decoder.non_finite is not None:
            return False, None, start + end
        return True, value, start + end


def find_embedded(text: str) -> tuple[Any] | None:
    """The longest strict-JSON object/array embedded in ``text``, as a 1-tuple, or None.

    Longest rather than first so a citation like "[1]" before the payload is not taken for
    it. Linear in ``len(text)``: every character is decoded a bounded number of times.
    """
    best: tuple[Any] | None = None
    best_len = 0
    pos = 0
    decoder = _decoder()
    while True:
        m = _OPEN_RE.search(text, pos)
        if m is None:
            return best
        start = m.start()
        try:
            ok, value, end = _decode_at(decoder, text, start)
        except RecursionError:  # pathologically deep nesting: give up rather than crawl
            return best
        if ok and end - start > best_len:
            best, best_len = (value,), end - start
        pos = max(end, start + 1)
