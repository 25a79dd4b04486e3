"""Judge prompts: Jinja templates rendered into the judge's chat messages.

The bundled templates (``templates/rubric.j2`` and ``templates/pairwise.j2``) can be
replaced by a user file. A template defines a ``user`` block and optionally a ``system``
block; each becomes one message. Rendering is sandboxed and strict like the variants'
prompts: an undefined variable is an error, and model text is inserted as data (jinja2
renders each template exactly once, so ``{{ ... }}`` inside an output is never evaluated).

Model and user text (the case input, the outputs, a reference answer) may try to close the
prompt's delimiters (``</reply>``) and smuggle instructions after them; those tags are
neutralised before rendering (``</reply>`` becomes ``[/reply]``). That raises the bar; it
does not make a judge immune to prompt injection, which is one more reason to calibrate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from evalrun.errors import UserInputError
from evalrun.judging.answers import ORDERS, Order

__all__ = [
    "DELIMITER_TAGS",
    "JudgeKind",
    "JudgeTemplate",
    "Message",
    "load_template",
    "neutralise",
    "render_pairwise",
    "render_pairwise_both",
    "render_rubric",
]

JudgeKind = Literal["rubric", "pairwise"]
"""The two judge kinds that have a prompt (``similar`` calls an embedding model)."""

Message = dict[str, str]
"""One chat message: ``{"role": ..., "content": ...}``."""

DELIMITER_TAGS: tuple[str, ...] = (
    "question", "reply", "reference_answer", "request", "response_a", "response_b", "criteria",
)
"""Tags the bundled templates fence untrusted text with; neutralised inside that text."""

MAX_TEMPLATE_BYTES = 256 * 1024
"""A larger judge template is almost surely the wrong file."""

_TAG_RE = re.compile(r"<\s*(/?)\s*(" + "|".join(DELIMITER_TAGS) + r")\s*>", re.IGNORECASE)
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)

# Values a template is dry-run with at load time, so a typo fails before any paid call.
_DRY_RUBRIC: tuple[dict[str, Any], ...] = (
    {"criteria": "c", "input": "i", "output": "o", "reference": None, "scale": None, "pass_threshold": None},
    {"criteria": "c", "input": "i", "output": "o", "reference": "r", "scale": 5, "pass_threshold": 4},
)
_DRY_PAIRWISE: tuple[dict[str, Any], ...] = (
    {"criteria": "c", "input": "i", "response_a": "a", "response_b": "b", "reference": None},
    {"criteria": "c", "input": "i", "response_a": "a", "response_b": "b", "reference": "r"},
)


def neutralise(text: str) -> str:
    """``text`` with the delimiter tags turned into brackets: ``</reply>`` → ``[/reply]``."""
    return _TAG_RE.sub(lambda m: f"[{m.group(1)}{m.group(2)}]", text)


@dataclass(frozen=True)
class JudgeTemplate:
    """A compiled judge prompt of one kind; ``source`` names it in messages and reports."""

    kind: JudgeKind
    source: str
    _template: Any = field(repr=False, compare=False)

    def render(self, variables: Mapping[str, Any]) -> list[Message]:
        """The judge's messages for these variables (system first when the block yields text).

        Raises:
            UserInputError: the template needs a variable it was not given, or failed inside
                the sandbox (named by ``source``).
        """
        messages: list[Message] = []
        try:
            for role in ("system", "user"):
                block = self._template.blocks.get(role)
                if block is None:
                    continue
                text = "".join(block(self._template.new_context(dict(variables)))).strip()
                if text:
                    messages.append({"role": role, "content": text})
        except UndefinedError as exc:
            raise UserInputError(f"judge template: {exc.message}", file=self.source,
                                 field=f"judge.{self.kind}_template") from None
        except Exception as exc:  # sandbox violations and failing filters are the template's fault
            raise UserInputError(f"judge template failed: {type(exc).__name__}: {exc}", file=self.source,
                                 field=f"judge.{self.kind}_template") from None
        if not messages or messages[-1]["role"] != "user":
            raise UserInputError("judge template rendered an empty user message", file=self.source,
                                 field=f"judge.{self.kind}_template")
        return messages


def _compile(kind: JudgeKind, text: str, source: str, field_name: str) -> JudgeTemplate:
    try:
        compiled = _ENV.from_string(text)
    except TemplateSyntaxError as exc:
        raise UserInputError(f"template syntax error at line {exc.lineno}: {exc.message}", file=source,
                             field=field_name) from None
    if "user" not in compiled.blocks:
        raise UserInputError("a judge template needs a {% block user %}...{% endblock %} "
                             "(and may have a system block)", file=source, field=field_name)
    template = JudgeTemplate(kind, source, compiled)
    for variables in _DRY_RUBRIC if kind == "rubric" else _DRY_PAIRWISE:
        template.render(variables)
    return template


def load_template(kind: JudgeKind, path: str | Path | None = None) -> JudgeTemplate:
    """The bundled template of ``kind``, or the user's file at ``path`` (validated now).

    A user template is compiled and dry-run with placeholder values, so a syntax error, a
    missing ``user`` block or a misspelt variable is a one-line ``UserInputError`` at load
    time, before any judge call.
    """
    if kind not in ("rubric", "pairwise"):
        raise ValueError(f"no judge template for {kind!r}")
    field_name = f"judge.{kind}_template"
    if path is None:
        text = (resources.files("evalrun.judging") / "templates" / f"{kind}.j2").read_text(encoding="utf-8")
        return _compile(kind, text, f"bundled {kind}.j2", field_name)
    file = Path(path)
    try:
        if file.stat().st_size > MAX_TEMPLATE_BYTES:
            raise UserInputError(f"judge template is larger than {MAX_TEMPLATE_BYTES // 1024} KiB", file=file,
                                 field=field_name)
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError("judge template not found", file=file, field=field_name) from None
    except IsADirectoryError:
        raise UserInputError("expected a judge template file, found a folder", file=file, field=field_name) from None
    except UnicodeDecodeError:
        raise UserInputError("judge template is not UTF-8 text", file=file, field=field_name) from None
    except OSError as exc:
        raise UserInputError(f"cannot read judge template: {exc.strerror}", file=file, field=field_name) from None
    return _compile(kind, text, str(file), field_name)


def _need(template: JudgeTemplate, kind: JudgeKind) -> None:
    if template.kind != kind:
        raise ValueError(f"a {template.kind} template cannot render a {kind} prompt")


def render_rubric(
    template: JudgeTemplate,
    *,
    criteria: str,
    input: str,
    output: str,
    reference: str | None = None,
    scale: int | None = None,
    pass_threshold: int | None = None,
) -> list[Message]:
    """The rubric judge's messages for one output.

    Args:
        template: a rubric template from :func:`load_template`.
        criteria: the check's criteria text.
        input: what the judged model was asked (the case's rendered user turn).
        output: the judged model's answer (untrusted).
        reference: an ideal answer, when the check gives one.
        scale: N of a 1–N rubric (None for pass/fail).
        pass_threshold: lowest passing score of a scaled rubric.
    """
    _need(template, "rubric")
    return template.render({
        "criteria": criteria,
        "input": neutralise(input),
        "output": neutralise(output),
        "reference": neutralise(reference) if reference is not None else None,
        "scale": scale,
        "pass_threshold": pass_threshold,
    })


def render_pairwise(
    template: JudgeTemplate,
    *,
    criteria: str,
    input: str,
    baseline: str,
    candidate: str,
    order: Order,
    reference: str | None = None,
) -> list[Message]:
    """The pairwise judge's messages in one order (``baseline_first``: the baseline is A)."""
    _need(template, "pairwise")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    first, second = (baseline, candidate) if order == "baseline_first" else (candidate, baseline)
    return template.render({
        "criteria": criteria,
        "input": neutralise(input),
        "response_a": neutralise(first),
        "response_b": neutralise(second),
        "reference": neutralise(reference) if reference is not None else None,
    })


def render_pairwise_both(
    template: JudgeTemplate,
    *,
    criteria: str,
    input: str,
    baseline: str,
    candidate: str,
    reference: str | None = None,
) -> dict[Order, list[Message]]:
    """Both orders of one pairwise judgement, keyed ``baseline_first`` then ``candidate_first``."""
    return {
        order: render_pairwise(template, criteria=criteria, input=input, baseline=baseline,
                               candidate=candidate, order=order, reference=reference)
        for order in ORDERS
    }
