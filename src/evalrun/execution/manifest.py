"""manifest.json: what a run was made of, written before its first call.

Typed (``Manifest``) so the writer and every reader (resume, merge, rescore, ``evalrun
plan``) agree on one shape; the file is the model's JSON. Read leniently: a manifest of
another evalrun version keeps the fields this one knows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from evalrun import __version__
from evalrun.execution.store import FORMAT_VERSION, MANIFEST, write_json
from evalrun.project.config import LoadedVariant
from evalrun.project.loader import Project

__all__ = ["Manifest", "SuiteSnapshot", "VariantSnapshot", "created_of", "read_manifest", "write_manifest"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class VariantSnapshot(_Frozen):
    """One side as run: its config (validated, defaults filled) and template sources."""

    name: str
    """The variant's ``name``."""
    config_file: str
    """Path of its config file (re-read by ``rescore``, ``merge`` and ``note``)."""
    model: str
    """Model string."""
    api_base: str | None = None
    """OpenAI-compatible endpoint, if any."""
    labels: dict[str, str]
    """The four version labels."""
    config: dict[str, Any]
    """The whole validated config (never a key: configs hold variable names only)."""
    system_template: str | None = None
    """System template source."""
    user_template: str | None = None
    """User template source."""


class SuiteSnapshot(_Frozen):
    """The suite as run."""

    file: str
    """Path of the suite file."""
    config: dict[str, Any]
    """The validated suite config."""


class Manifest(_Frozen):
    """manifest.json (``format_version``: the run folder's journal format)."""

    format_version: int
    """Run folder format (``store.FORMAT_VERSION``)."""
    evalrun_version: str
    """The evalrun that made the run."""
    created: str
    """When the run started (UTC)."""
    fingerprint: str
    """Identity of the inputs (configs, suite, cases)."""
    config_fingerprint: str
    """Identity of configs and suite only (guards ``merge``)."""
    shard: list[int] | None = None
    """``[I, N]`` for a shard run."""
    subset: str | None = None
    """How the cases were chosen when not the whole suite (``cases`` lists them)."""
    aa_mode: bool = False
    """An A/A run."""
    baseline: VariantSnapshot
    """The baseline side."""
    candidate: VariantSnapshot
    """The candidate side."""
    suite: SuiteSnapshot
    """The suite."""
    cases: list[str]
    """Case ids, sorted."""


def _variant_snapshot(v: LoadedVariant) -> VariantSnapshot:
    return VariantSnapshot(
        name=v.config.name, config_file=str(v.path), model=v.config.model, api_base=v.config.api_base,
        labels=v.config.versions.model_dump(), config=v.config.model_dump(mode="json"),
        system_template=v.system_template, user_template=v.user_template,
    )


def build_manifest(project: Project, created: str) -> Manifest:
    """The manifest of a run of ``project`` started at ``created``."""
    return Manifest(
        format_version=FORMAT_VERSION, evalrun_version=__version__, created=created,
        fingerprint=project.fingerprint(), config_fingerprint=project.config_fingerprint(),
        shard=list(project.shard) if project.shard else None, subset=project.subset, aa_mode=project.aa_mode,
        baseline=_variant_snapshot(project.baseline), candidate=_variant_snapshot(project.candidate),
        suite=SuiteSnapshot(file=str(project.suite.path), config=project.suite.config.model_dump(mode="json")),
        cases=[c.id for c in project.cases],
    )


def write_manifest(project: Project, run_dir: Path, created: str) -> None:
    """What was run, written before the first call (a crashed run can still be resumed)."""
    write_json(run_dir / MANIFEST, build_manifest(project, created).model_dump(mode="json"))


def read_manifest(run_dir: Path) -> Manifest:
    """The manifest of ``run_dir``; ``ValueError`` when it is not JSON or not a manifest."""
    data = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


def created_of(run_dir: Path) -> str:
    """When the run in ``run_dir`` started ("" when its manifest cannot be read)."""
    try:
        return read_manifest(run_dir).created
    except (OSError, ValueError):
        return ""
