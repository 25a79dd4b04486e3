"""Pydantic's validation errors in the words of someone editing YAML: one rule for every user file."""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["first_error"]


def first_error(exc: ValidationError, *, what: str = "the format", top: str = "(top level)") -> tuple[str, str]:
    """(field path, message) of the first problem: "is required", "unknown key (…)", or
    pydantic's message without its "Value error, " / "Assertion failed, " prefix.

    ``what`` names the README section an unknown key points to; ``top`` is the field shown
    for an error of the whole object.
    """
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or top
    msg = str(err["msg"])
    if err["type"] == "missing":
        msg = "is required"
    elif err["type"] == "extra_forbidden":
        msg = f"unknown key (check the spelling; see the README for {what})"
    return loc, msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
