"""Everything about a loaded project that can be checked without a model call.

``load_project`` already refuses what makes the files invalid. This adds what makes a run
fail or lie although every file is valid: model strings no provider serves (a typo in
the provider prefix), key variables that are not set, a provider's missing install extra,
and hidden edits (a fingerprinted setting changed while its version label did not, which
the gate would FAIL on after paying for every call). ``evalrun validate`` reports them all;
``compare`` refuses the model strings before its first call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from evalrun.errors import UserInputError
from evalrun.project.fingerprint import label_audit
from evalrun.project.loader import Project
from evalrun.providers.model_strings import check_model_string
from evalrun.providers.registry import spec_for
from evalrun.records import SIDES

__all__ = ["Problem", "check_model_strings", "offline_problems"]

Severity = Literal["config", "environment", "warning"]
"""``config``: fix a file (exit 2); ``environment``: set a variable or install (exit 4);
``warning``: worth a look, not an error."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding, rendered as one line naming the file and field."""

    severity: Severity
    file: str
    field: str
    message: str

    def line(self) -> str:
        """``FILE: field FIELD: message``."""
        return f"{self.file}: field {self.field}: {self.message}"


def _model_problems(project: Project) -> list[Problem]:
    out: list[Problem] = []
    for side in SIDES:
        v = project.variant(side)
        models = [("model", v.config.model)] if v.config.router is None else [
            (f"router.deployments[{i}].model", d.model) for i, d in enumerate(v.config.router.deployments)]
        for field, model in models:
            why = check_model_string(model)
            if why is not None:
                out.append(Problem("config", str(v.path), field, why))
    return out


def check_model_strings(project: Project) -> None:
    """Raise ``UserInputError`` (exit 2) for the first model string no provider serves."""
    for p in _model_problems(project):
        raise UserInputError(p.message, file=p.file, field=p.field)


def _environment_problems(project: Project) -> list[Problem]:
    out: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for side in SIDES:
        v = project.variant(side)
        named = [("api_key_env", v.config.api_key_env)]
        if v.config.router is not None:
            named += [(f"router.deployments[{i}].api_key_env", d.api_key_env)
                      for i, d in enumerate(v.config.router.deployments)]
        for field, env in named:
            if env and not os.environ.get(env) and (str(v.path), field) not in seen:
                seen.add((str(v.path), field))
                out.append(Problem("environment", str(v.path), field,
                                   f"environment variable {env} is not set (export {env}=... before compare)"))
        missing = spec_for(v.config.model).available()
        if missing:
            out.append(Problem("environment", str(v.path), "model", f"model {v.config.model} {missing}"))
    return out


def _label_problems(project: Project) -> list[Problem]:
    if project.aa_mode:
        return []
    out: list[Problem] = []
    path = str(project.candidate.path)
    for f in label_audit(project.baseline, project.candidate):
        fields = ", ".join(f.changed_fields) or "its settings"
        if f.status == "hidden_edit":
            out.append(Problem("config", path, f"versions.{f.label}", (
                f"hidden edit: {fields} changed but {f.label} is still '{f.candidate_label}' on both sides; "
                f"bump versions.{f.label} (the gate FAILs rule label_{f.label} otherwise)")))
        elif f.status == "bumped_without_change":
            out.append(Problem("warning", path, f"versions.{f.label}", (
                f"bumped '{f.baseline_label}' -> '{f.candidate_label}' but nothing it stands for changed")))
    return out


def offline_problems(project: Project) -> list[Problem]:
    """Every problem found without a call: model strings, hidden edits, keys, extras (in that order)."""
    return _model_problems(project) + _label_problems(project) + _environment_problems(project)
