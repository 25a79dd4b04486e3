"""Prompt rendering: jinja2 templates from the variant, variables from the case.

Rendering is sandboxed and strict: an undefined variable is an error. Case values are
inserted as data; a value containing ``{{ ... }}`` is never evaluated again, because
jinja2 renders each template exactly once.

An undefined name is blamed where the fix belongs (``_undefined_error``): the case file
when other cases define the variable and this one does not; otherwise the variant config
and its template field, with "did you mean" for a typo and, for ``policy.X`` /
``retrieval.X``, the keys that mapping does have.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from evalrun.errors import UserInputError
from evalrun.project.cases import Case
from evalrun.project.config import LoadedVariant

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_MISSING_ATTR = re.compile(r"^'[^']*' has no attribute '([^']+)'$")
_MAPPINGS = ("policy", "retrieval")
"""Variant settings templates see as objects; a missing key is fixed in the variant config."""


def _did_you_mean(name: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def _keys(mapping: Mapping[str, Any]) -> str:
    return ", ".join(sorted(map(str, mapping))) or "no keys"


class PromptRenderer:
    """Compiled templates of one variant; ``render(case)`` gives the chat messages."""

    def __init__(self, variant: LoadedVariant, *, suite_vars: Collection[str] = ()) -> None:
        """``suite_vars``: every variable any case of the suite defines (tells a case that
        lacks one from a template that names one no case has)."""
        self.variant = variant
        self.suite_vars = frozenset(suite_vars)
        self._system = self._compile(variant.system_template, "prompt.system")
        self._user = self._compile(variant.user_template, "prompt.user")

    def _compile(self, source: str | None, field: str) -> Any:
        if source is None:
            return None
        try:
            return _ENV.from_string(source)
        except TemplateSyntaxError as exc:
            raise UserInputError(
                f"template syntax error at line {exc.lineno}: {exc.message}", file=self.variant.path, field=field
            ) from None

    def _render(self, template: Any, case: Case, field: str) -> str:
        context = {
            **case.vars,
            "case": case.meta(),
            "retrieval": self.variant.config.retrieval,
            "policy": self.variant.config.policy,
        }
        try:
            return str(template.render(context)).strip()
        except UndefinedError as exc:
            raise self._undefined_error(exc.message or "", template_source(self.variant, field), case, field,
                                        context) from None
        except Exception as exc:  # sandbox violations, filters failing on case data
            raise UserInputError(
                f"rendering {field} of {self.variant.path} failed: {type(exc).__name__}: {exc}",
                file=case.file,
                case_id=case.id,
                field="vars",
            ) from None

    def _where(self, field: str) -> str:
        prompt = self.variant.config.prompt
        file = prompt.system_file if field == "prompt.system" else prompt.user_file
        return f"{field} ({file})" if file else field

    def _undefined_error(self, message: str, source: str, case: Case, field: str,
                         context: Mapping[str, Any]) -> UserInputError:
        """The error for an undefined name, blaming where the fix belongs (module docstring)."""
        where = self._where(field)
        name_match = _UNDEFINED_NAME.match(message)
        if name_match:
            name = name_match.group(1)
            if name in self.suite_vars:  # other cases define it: this case lacks it
                return UserInputError(
                    f"'{name}' is undefined: template {where} of {self.variant.path} uses it and other cases "
                    f"define it; add {name} to this case's vars", file=case.file, case_id=case.id, field="vars")
            hint = _did_you_mean(name, set(context) | self.suite_vars)
            fix = (f"{hint}(fix the template)" if hint else
                   f"no case defines it: add {name} to the cases' vars, or remove it from the template")
            return UserInputError(f"'{name}' is undefined (rendering case {case.id}): {fix}",
                                  file=self.variant.path, field=where)
        attr_match = _MISSING_ATTR.match(message)
        if attr_match:
            attr = attr_match.group(1)
            owners = re.findall(rf"\b(\w+)\s*(?:\.\s*{re.escape(attr)}\b|\[\s*['\"]{re.escape(attr)}['\"]\s*\])", source)
            owner = next((o for o in owners if o in _MAPPINGS), owners[0] if owners else None)
            if owner in _MAPPINGS:
                mapping = context.get(owner) or {}
                hint = _did_you_mean(attr, mapping)
                return UserInputError(
                    f"{owner}.{attr} is undefined: {owner}: in this file has {_keys(mapping)}; {hint}"
                    f"add {attr}: under {owner}: (and bump versions.{owner}_version), or fix the template",
                    file=self.variant.path, field=where)
            if owner is not None and isinstance(context.get(owner), Mapping):
                hint = _did_you_mean(attr, context[owner])
                return UserInputError(
                    f"{owner}.{attr} is undefined: template {where} of {self.variant.path} uses it; this case's "
                    f"{owner} has {_keys(context[owner])}; {hint}add {attr} to it", file=case.file,
                    case_id=case.id, field=f"vars.{owner}")
        return UserInputError(f"{message} (rendering case {case.id})", file=self.variant.path, field=where)

    def render(self, case: Case) -> list[dict[str, Any]]:
        """Messages for this case: system template, then the case's own messages or the user template."""
        messages: list[dict[str, Any]] = []
        if self._system is not None:
            messages.append({"role": "system", "content": self._render(self._system, case, "prompt.system")})
        messages.extend({"role": m.role, "content": m.content} for m in self.variant.config.prompt.examples)
        if case.messages is not None:
            messages.extend(dict(m) for m in case.messages)
        elif self._user is not None:
            messages.append({"role": "user", "content": self._render(self._user, case, "prompt.user")})
        else:
            raise UserInputError(
                f"variant {self.variant.name} has no user template and the case has no messages",
                file=case.file,
                case_id=case.id,
                field="messages",
            )
        return messages


def template_source(variant: LoadedVariant, field: str) -> str:
    """The source text of the variant's ``prompt.system`` or ``prompt.user`` template."""
    return (variant.system_template if field == "prompt.system" else variant.user_template) or ""
