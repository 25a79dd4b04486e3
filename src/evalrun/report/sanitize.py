"""Make untrusted text (model outputs, case data, config values) inert for each output format.

Everything a report shows may come from a model or a user file, so it can hold terminal
escape sequences, control characters, markup or template syntax. These helpers strip what
no format should carry and escape what a given format would interpret:

* ``strip_control`` — for every format: ANSI escape sequences, C0/C1 controls (except
  newline and tab), lone surrogates and the XML-forbidden noncharacters go.
* ``md_cell`` — one GitHub-flavoured markdown table cell: no row breaks, no links, no HTML.
* ``terminal_safe`` — for stdout: additionally no bidirectional overrides, one line.
* ``json_for_script`` — JSON that can sit inside ``<script type="application/json">``.

HTML escaping itself is jinja2's autoescape; nothing here replaces it.
"""

from __future__ import annotations

import json
import re
from typing import Any

# ANSI / ECMA-48 sequences: CSI (ESC [ or the 8-bit CSI), OSC / DCS / PM / APC / SOS strings
# (terminated by BEL or ST), and two-character escapes. Removed whole, so no "[31m" residue.
_ANSI_RE = re.compile(
    r"""
    (?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?           # CSI ... final byte (final may be cut off)
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])   # OSC, DCS, SOS, PM, APC (7- or 8-bit)
      [^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?     #   ... up to BEL / ST (or end of line)
    | \x1b[ -/]*[0-~]?                          # other escapes: ESC (intermediates) final
    """,
    re.VERBOSE,
)
# C0 except \t and \n, DEL, C1; lone surrogates (unencodable as UTF-8); U+FFFE/U+FFFF
# (forbidden in XML 1.0).
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# Bidirectional embeddings/overrides/isolates: can make a terminal line read differently
# from what it contains ("Trojan source").
_BIDI_RE = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_WS_RUN_RE = re.compile(r"[\t\n]+")
# Every character strip_control removes or rewrites (controls incl. CR, surrogates, U+FFFE/F,
# bidi marks; every ANSI sequence starts with one of them): text without any is returned as
# is, one scan instead of four passes (a 10,000-case report strips ~150,000 strings).
_NEEDS_STRIP_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

_MD_ESCAPES = {
    "\\": "\\\\",
    "|": "\\|",
    "`": "\\`",
    "[": "\\[",
    "]": "\\]",
    "*": "\\*",
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
}
_MD_RE = re.compile("[" + re.escape("".join(_MD_ESCAPES)) + "]")

_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SCRIPT_RE = re.compile("[<>&\u2028\u2029]")


def strip_control(text: str) -> str:
    """Remove ANSI escape sequences and control characters, keeping ``\\n`` and ``\\t``.

    Carriage returns become newlines first (``\\r\\n`` → ``\\n``), because a bare ``\\r``
    lets a terminal overwrite what was printed before it.
    """
    if not text or _NEEDS_STRIP_RE.search(text) is None:
        return text or ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _ANSI_RE.sub("", text)
    # Bidi overrides go everywhere, not only on terminals: in a browser or a PR comment they
    # can make a verdict reason read differently from what it contains.
    return _BIDI_RE.sub("", _CONTROL_RE.sub("", text))


def strip_bidi(text: str) -> str:
    """Remove bidirectional overrides/isolates from a whole rendered document."""
    return _BIDI_RE.sub("", text)


def truncate(text: str, limit: int) -> tuple[str, int]:
    """``text`` cut to ``limit`` characters, and how many characters were cut off."""
    if limit < 0 or len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def one_line(text: str) -> str:
    """``strip_control`` then newlines and tabs (runs of them) collapsed to single spaces."""
    return _WS_RUN_RE.sub(" ", strip_control(text))


def md_cell(text: Any, limit: int = 160) -> str:
    """``text`` as one markdown table cell: inert, single-line, at most ``limit`` characters.

    Escapes what GitHub would interpret: ``|`` (ends the cell), backticks (code spans),
    ``[``/``]`` (link syntax, so ``[x](javascript:...)`` stays text), ``*`` (emphasis),
    ``<``/``>``/``&`` (raw HTML and entities) and backslashes. Truncates *before* escaping
    so an escape sequence is never cut in half.
    """
    flat = one_line("" if text is None else str(text)).strip()
    flat, cut = truncate(flat, max(limit, 1))
    out = _MD_RE.sub(lambda m: _MD_ESCAPES[m.group(0)], flat)
    return out + "…" if cut else out


def terminal_safe(text: Any, *, single_line: bool = True) -> str:
    """``text`` safe to print on a terminal: no escapes, controls or bidi overrides.

    With ``single_line`` (the default) newlines and tabs become spaces, so a value can never
    break the fixed-width table it is printed in.
    """
    s = "" if text is None else str(text)
    s = one_line(s) if single_line else strip_control(s)
    return _BIDI_RE.sub("", s)


def json_for_script(data: Any) -> str:
    """Compact, sorted JSON that cannot end the ``<script>`` element it is embedded in.

    ``<``, ``>`` and ``&`` are written as ``\\u003c`` etc. (so ``</script>`` or ``<!--`` in a
    model output stays inside the string), and U+2028/U+2029 are escaped for old parsers
    that treat them as line terminators. These characters only occur inside JSON strings,
    where the escapes mean the same thing, so ``JSON.parse`` returns the original data.
    """
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return _SCRIPT_RE.sub(lambda m: _SCRIPT_ESCAPES[m.group(0)], raw)
