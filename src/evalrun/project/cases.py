"""Case suite: models and loaders for YAML / JSONL case files.

A case file is YAML (a list of cases, or ``{defaults: {...}, cases: [...]}``) or JSONL
(one case object per line). Expectations compile to check functions at load time, so a
bad regex or a missing schema stops the run before the first model call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evalrun.errors import UserInputError
from evalrun.judging.spec import JudgeSettings
from evalrun.project.pathglob import PatternError, has_magic, split_pattern, walk_files
from evalrun.project.validation import first_error
from evalrun.project.yamlio import load_yaml, read_text, resolve_inside
from evalrun.records import CaseKind

CASE_SUFFIXES = (".yaml", ".yml", ".jsonl")


class MessageSpec(BaseModel):
    """One chat message of a case's own conversation (used verbatim, never templated)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = None
    tool_call_id: str | None = None


class CaseSpec(BaseModel):
    """A case as written by the user."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:/@+\-]+$")
    kind: CaseKind
    cohort: str = Field(min_length=1, max_length=200)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    messages: list[MessageSpec] | None = None
    expect: list[str | dict[str, Any]] = Field(default_factory=list)

    @field_validator("expect")
    @classmethod
    def _expect_shape(cls, items: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
        for i, item in enumerate(items):
            if isinstance(item, dict) and len(item) != 1:
                raise ValueError(f"expect[{i}] must be a check name or a one-key mapping {{name: params}}")
        return items


@dataclass(slots=True)
class Case:
    """A validated case with its expectations compiled."""

    id: str
    kind: CaseKind
    cohort: str
    tags: list[str]
    vars: dict[str, Any]
    messages: list[dict[str, Any]] | None
    expect: list[tuple[str, dict[str, Any]]]
    file: str
    description: str | None = None
    compiled: Any = field(default=None, repr=False)  # scoring.CompiledExpectations
    # The judge checks (rubric / pairwise / similar): judged after the variant calls, not
    # compiled with the others (project.judges.CaseJudge).
    judges: list[Any] = field(default_factory=list, repr=False)

    def meta(self) -> dict[str, Any]:
        """The case as seen by templates (``case.id``, ``case.cohort``...)."""
        return {"id": self.id, "kind": self.kind, "cohort": self.cohort, "tags": list(self.tags)}


def _normalise_expect(items: list[str | dict[str, Any]], *, file: Path, case_id: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append((item, {}))
            continue
        ((name, params),) = item.items()
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise UserInputError(
                f"parameters of check {name!r} must be a mapping, found {type(params).__name__}",
                file=file,
                case_id=case_id,
                field=f"expect[{i}].{name}",
            )
        out.append((str(name), params))
    return out


def _case_from_raw(raw: Any, *, file: Path, where: str, defaults: dict[str, Any]) -> Case:
    if not isinstance(raw, dict):
        raise UserInputError(f"{where}: a case must be a mapping, found {type(raw).__name__}", file=file)
    data = {**defaults, **raw}
    if "tags" in defaults and "tags" in raw and isinstance(raw["tags"], list) and isinstance(defaults["tags"], list):
        data["tags"] = list(dict.fromkeys([*defaults["tags"], *raw["tags"]]))
    if "expect" in defaults and "expect" in raw and isinstance(raw["expect"], list) and isinstance(defaults["expect"], list):
        # Default expectations apply to every case of the file; a case adds its own.
        data["expect"] = [*defaults["expect"], *raw["expect"]]
    case_id = str(raw.get("id")) if raw.get("id") is not None else None
    try:
        spec = CaseSpec.model_validate(data)
    except ValidationError as exc:
        loc, msg = first_error(exc, what="the case format", top="(case)")
        raise UserInputError(msg, file=file, case_id=case_id or where, field=loc) from None
    return Case(
        id=spec.id,
        kind=spec.kind,
        cohort=spec.cohort,
        tags=spec.tags,
        vars=spec.vars,
        messages=[m.model_dump(exclude_none=True) for m in spec.messages] if spec.messages is not None else None,
        expect=_normalise_expect(spec.expect, file=file, case_id=spec.id),
        file=str(file),
        description=spec.description,
    )


def load_case_file(path: Path) -> list[Case]:
    """Load one YAML or JSONL case file (expectations not yet compiled)."""
    if path.suffix == ".jsonl":
        text = read_text(path, what="case file")
        out: list[Case] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserInputError(f"line {lineno}: invalid JSON: {exc.msg}", file=path) from None
            except RecursionError:
                raise UserInputError(f"line {lineno}: JSON nested too deeply", file=path) from None
            out.append(_case_from_raw(raw, file=path, where=f"line {lineno}", defaults={}))
        return out
    data = load_yaml(path, what="case file")
    defaults: dict[str, Any] = {}
    if isinstance(data, dict):
        unknown = sorted(str(k) for k in set(data) - {"defaults", "cases"})
        if unknown:
            raise UserInputError(f"unknown top-level key {unknown[0]!r} (expected defaults, cases)", file=path)
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise UserInputError("must be a mapping", file=path, field="defaults")
        bad = sorted(str(k) for k in set(defaults) - {"kind", "cohort", "tags", "vars", "expect"})
        if bad:
            raise UserInputError(f"key {bad[0]!r} cannot have a default", file=path, field="defaults")
        data = data.get("cases")
    if data is None:
        return []
    if not isinstance(data, list):
        raise UserInputError("expected a list of cases", file=path)
    return [_case_from_raw(raw, file=path, where=f"item {i}", defaults=defaults) for i, raw in enumerate(data)]


def discover_case_files(entries: list[str], *, base_dir: Path, suite_file: Path, root: Path) -> list[Path]:
    """Expand the suite's ``cases:`` entries (files, folders, globs) into sorted files.

    A pattern's literal prefix must resolve inside ``root`` before anything is walked; walks
    never follow links to folders and skip hidden entries (see ``evalrun.project.pathglob``).
    """
    files: list[Path] = []
    for i, entry in enumerate(entries):
        fieldname = f"cases[{i}]"
        try:
            if has_magic(entry):
                literal, segments = split_pattern(entry)
                try:
                    top = resolve_inside(base_dir, literal, file=suite_file, field=fieldname, root=root)
                except UserInputError as exc:  # refused before a single folder is listed
                    if "outside" not in exc.detail:
                        raise
                    raise UserInputError(
                        f"pattern {entry!r} starts outside the project folder {root.resolve()}",
                        file=suite_file, field=fieldname,
                    ) from None
                matches = walk_files(top, segments) if top.is_dir() else []
                if not matches:
                    raise UserInputError(f"pattern {entry!r} matches no file", file=suite_file, field=fieldname)
            else:
                target = resolve_inside(base_dir, entry, file=suite_file, field=fieldname, root=root)
                if target.is_dir():
                    matches = [p for p in walk_files(target, ["**"]) if p.suffix in CASE_SUFFIXES]
                    if not matches:
                        raise UserInputError(
                            f"folder {entry!r} holds no .yaml/.yml/.jsonl case file", file=suite_file, field=fieldname
                        )
                elif target.is_file():
                    matches = [target]
                else:
                    raise UserInputError(f"{entry!r} not found", file=suite_file, field=fieldname)
        except PatternError as exc:
            raise UserInputError(f"pattern {entry!r}: {exc}", file=suite_file, field=fieldname) from None
        # resolve_inside follows file links: a link to a file outside the project is refused.
        files.extend(resolve_inside(base_dir, str(m), file=suite_file, field=fieldname, root=root) for m in matches)
    for f in files:
        if f.suffix not in CASE_SUFFIXES:
            raise UserInputError(f"{f.name}: case files must end in .yaml, .yml or .jsonl", file=suite_file, field="cases")
    return list(dict.fromkeys(files))


def load_cases(files: list[Path]) -> list[Case]:
    """Load every case file; ids must be unique across the suite. Sorted by id."""
    seen: dict[str, str] = {}
    cases: list[Case] = []
    for f in files:
        for case in load_case_file(f):
            if case.id in seen:
                raise UserInputError(
                    f"duplicate case id (first defined in {seen[case.id]})", file=f, case_id=case.id, field="id"
                )
            seen[case.id] = str(f)
            cases.append(case)
    if not cases:
        raise UserInputError("the suite has no cases", file=files[0] if files else None)
    cases.sort(key=lambda c: c.id)
    return cases


def compile_case_expectations(cases: list[Case], judge: JudgeSettings | None = None, *,
                              suite_file: Path | None = None, root: Path | None = None) -> None:
    """Compile every case's checks (regexes, schemas, python functions) in place; validate its
    judge checks against the suite's ``judge`` settings (``Case.judges``)."""
    from evalrun.checks.registry import BuildContext
    from evalrun.checks.scoring import compile_expectations
    from evalrun.project.judges import is_judge_check, parse_case_judges

    for case in cases:
        base = Path(case.file).resolve().parent
        # Indices into the whole expect list, so error messages name the field as written.
        kept = [i for i, (name, _) in enumerate(case.expect) if not is_judge_check(name)]

        def ctx_for(i: int, name: str, _case: Case = case, _base: Path = base, _kept: list[int] = kept) -> BuildContext:
            index = _kept[i] if i < len(_kept) else len(_case.expect)
            return BuildContext(file=_case.file, case_id=_case.id, base_dir=_base, field=f"expect[{index}].{name}")

        case.compiled = compile_expectations([case.expect[i] for i in kept], case.kind, ctx_for)
        case.judges = parse_case_judges(case.expect, settings=judge, file=case.file, case_id=case.id, root=root,
                                        suite_file=suite_file)
