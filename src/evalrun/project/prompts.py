"""Prompt rendering: jinja2 templates from the variant, variables from the case.

Rendering is sandboxed and strict: an undefined variable is an error naming the case and
the variable. Case values are inserted as data; a value containing ``{{ ... }}`` is never
evaluated again, because jinja2 renders each template exactly once.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from evalrun.errors import UserInputError
from evalrun.project.cases import Case
from evalrun.project.config import LoadedVariant

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class PromptRenderer:
    """Compiled templates of one variant; ``render(case)`` gives the chat messages."""

    def __init__(self, variant: LoadedVariant) -> None:
        self.variant = variant
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
            raise UserInputError(
                f"template {field} of {self.variant.path}: {exc.message} (add it to the case's vars)",
                file=case.file,
                case_id=case.id,
                field="vars",
            ) from None
        except Exception as exc:  # sandbox violations, filters failing on case data
            raise UserInputError(
                f"rendering {field} of {self.variant.path} failed: {type(exc).__name__}: {exc}",
                file=case.file,
                case_id=case.id,
                field="vars",
            ) from None

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
