"""`evalrun init`: the scaffolded project validates and its CI workflow is usable."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import evalrun
from evalrun.errors import UserInputError
from evalrun.project.config import DEFAULT_RULES, VERSION_LABELS, load_suite
from evalrun.project.fingerprint import label_audit
from evalrun.project.loader import load_project
from evalrun.project.scaffold import init_project, next_steps, scaffold_manifest

EXPECTED = {
    "evals/baseline.yaml",
    "evals/candidate.yaml",
    "evals/suite.yaml",
    "evals/prompts/system.j2",
    "cases/representative.yaml",
    "cases/known_bad.yaml",
    "cases/format_sensitive.yaml",
    "cases/schemas/order.json",
    ".github/workflows/evalrun.yml",
    "EVALRUN.md",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    target = tmp_path / "proj"
    written = init_project(target)
    assert {p.relative_to(target).as_posix() for p in written} == EXPECTED
    return target


def test_init_writes_every_file(project: Path) -> None:
    for rel in EXPECTED:
        assert (project / rel).is_file(), rel
    assert {rel.as_posix() for rel, _ in scaffold_manifest()} == EXPECTED


def test_scaffold_validates_with_the_library(project: Path) -> None:
    p = load_project(project / "evals" / "baseline.yaml", project / "evals" / "candidate.yaml")
    kinds = {c.kind for c in p.cases}
    assert kinds == {"representative", "known_bad", "format_sensitive"}
    for kind in kinds:
        cohorts = {c.cohort for c in p.cases if c.kind == kind}
        assert len([c for c in p.cases if c.kind == kind]) >= 3
        assert len(cohorts) >= 2, kind
    checks = {name for c in p.cases for name, _ in c.expect}
    assert checks >= {"json", "json_schema", "contains", "regex", "refusal"}
    assert p.baseline.config.model == "local/smollm2"
    assert p.candidate.config.policy and "policy." in (p.baseline.system_template or "")


def test_scaffold_validates_with_the_cli(project: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evalrun",
            "validate",
            "evals/baseline.yaml",
            "evals/candidate.yaml",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok:")


def test_scaffold_labels_are_honest(project: Path) -> None:
    p = load_project(project / "evals" / "baseline.yaml", project / "evals" / "candidate.yaml")
    statuses = {f.label: f.status for f in label_audit(p.baseline, p.candidate)}
    assert statuses == {
        "model_version": "unchanged",
        "prompt_version": "unchanged",
        "retrieval_version": "unchanged",
        "policy_version": "bumped",
    }
    assert set(p.baseline.config.versions.model_dump()) == set(VERSION_LABELS)


def test_suite_writes_out_every_default_rule(project: Path) -> None:
    raw = yaml.safe_load((project / "evals" / "suite.yaml").read_text(encoding="utf-8"))
    assert set(raw["gate"]["rules"]) == set(DEFAULT_RULES)
    for name, default in DEFAULT_RULES.items():
        assert raw["gate"]["rules"][name] == default, name
    suite = load_suite(project / "evals" / "suite.yaml")
    assert suite.config.gate.on_inconclusive == "fail"
    text = (project / "evals" / "suite.yaml").read_text(encoding="utf-8")
    assert text.count("# Roll back if") >= len(DEFAULT_RULES)


def test_schema_example_is_a_json_schema(project: Path) -> None:
    from jsonschema import Draft202012Validator

    schema = json.loads((project / "cases" / "schemas" / "order.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert Draft202012Validator(schema).is_valid({"item": "socks", "quantity": 3})
    assert not Draft202012Validator(schema).is_valid({"item": "socks", "quantity": "3"})


def test_workflow_parses_and_documents_exit_codes(project: Path) -> None:
    path = project / ".github" / "workflows" / "evalrun.yml"
    text = path.read_text(encoding="utf-8")
    wf = yaml.safe_load(text)
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "pull_request" in on
    steps = wf["jobs"]["gate"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11"
    caches = [s for s in steps if s.get("uses", "").startswith("actions/cache")]
    assert {s["uses"].split("@")[0] for s in caches} == {
        "actions/cache/restore",
        "actions/cache/save",
    }
    for s in caches:
        assert ".evalrun-cache/" in s["with"]["path"] and "~/.cache/pip" in s["with"]["path"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert 'pip install "$EVALRUN_REQUIREMENT"' in runs
    assert wf["env"]["EVALRUN_REQUIREMENT"] == f"evalrun-gate[local]=={evalrun.__version__}"
    assert "-e '.[local]'" in text
    assert "evalrun compare evals/baseline.yaml evals/candidate.yaml --out reports/ci --format github" in runs
    assert wf["permissions"] == {"contents": "read", "pull-requests": "write"}
    for u in uses:  # only GitHub's own actions, never a third party's, pinned to a commit (tags move)
        assert not u or u.startswith("actions/"), u
        assert not u or re.fullmatch(r"actions/[\w./-]+@[0-9a-f]{40}", u), u
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "reports/ci/report.html"
    gate = steps[-1]
    assert gate["if"] == "always()"
    for code in ("0)", "1)", "2)", "3)", "4)"):
        assert code in gate["run"]
    for code in ("1) echo", "2) echo", "3) echo", "4) echo"):
        line = next(ln for ln in gate["run"].splitlines() if ln.strip().startswith(code))
        assert line.rstrip().endswith(f"exit {code[0]} ;;")
    for n in range(5):
        assert f"#   {n}  " in text  # every exit code documented in the header


def test_workflow_fail_step_maps_codes(project: Path, tmp_path: Path) -> None:
    """Run the workflow's last step with bash for each exit code."""
    wf = yaml.safe_load(
        (project / ".github" / "workflows" / "evalrun.yml").read_text(encoding="utf-8")
    )
    script = wf["jobs"]["gate"]["steps"][-1]["run"]
    for code, want in (("0", 0), ("1", 1), ("2", 2), ("3", 3), ("4", 4), ("", 1)):
        proc = subprocess.run(
            ["bash", "-e", "-c", script],
            env={"CODE": code, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == want, (code, proc.stdout, proc.stderr)


def test_readme_section_names_files_commands_and_codes(project: Path) -> None:
    text = (project / "EVALRUN.md").read_text(encoding="utf-8")
    for rel in EXPECTED - {"EVALRUN.md"}:
        assert f"`{rel}`" in text, rel
    assert "evalrun validate evals/baseline.yaml evals/candidate.yaml" in text
    assert "evalrun compare evals/baseline.yaml evals/candidate.yaml" in text
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 4 |"):
        assert code in text


def test_init_twice_without_force_raises(project: Path) -> None:
    before = (project / "evals" / "suite.yaml").read_text(encoding="utf-8")
    (project / "evals" / "suite.yaml").write_text("# edited\n" + before, encoding="utf-8")
    with pytest.raises(UserInputError) as info:
        init_project(project)
    assert "EVALRUN.md" in str(info.value)  # the first existing file, in copy order
    assert info.value.file == str(project / "EVALRUN.md")
    assert (project / "evals" / "suite.yaml").read_text(encoding="utf-8").startswith("# edited")


def test_refusal_names_the_first_existing_file_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "suite.yaml").write_text("mine\n", encoding="utf-8")
    with pytest.raises(UserInputError) as info:
        init_project(tmp_path)
    assert info.value.file == str(tmp_path / "evals" / "suite.yaml")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evals", "suite.yaml"]


def test_force_overwrites_and_keeps_other_files(project: Path) -> None:
    (project / "evals" / "suite.yaml").write_text("broken: [\n", encoding="utf-8")
    (project / "notes.txt").write_text("keep me\n", encoding="utf-8")
    written = init_project(project, force=True)
    assert len(written) == len(EXPECTED)
    assert (project / "notes.txt").read_text(encoding="utf-8") == "keep me\n"
    load_project(project / "evals" / "baseline.yaml", project / "evals" / "candidate.yaml")


def test_target_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x", encoding="utf-8")
    with pytest.raises(UserInputError):
        init_project(f)
    with pytest.raises(UserInputError):
        init_project(f, force=True)


def test_next_steps_mentions_the_commands(tmp_path: Path) -> None:
    text = next_steps(tmp_path)
    assert f"cd {tmp_path}" in text and "evalrun validate" in text
    assert "cd " not in next_steps(Path("."))


def test_no_install_line_names_another_project(project: Path) -> None:
    """The index's `evalrun` is someone else's package: every install line pins ours."""
    pinned = f"evalrun-gate[local]=={evalrun.__version__}"
    texts = {p.relative_to(project).as_posix(): p.read_text(encoding="utf-8") for p in project.rglob("*") if p.is_file()}
    lines = [(rel, ln) for rel, t in texts.items() for ln in t.splitlines() if "pip install" in ln]
    assert lines, "the scaffold should say how to install evalrun"
    for rel, ln in lines:
        assert pinned in ln or "$EVALRUN_REQUIREMENT" in ln or "-e '.[local]'" in ln, (rel, ln)
    assert all("@EVALRUN_REQUIREMENT@" not in t for t in texts.values())
    assert f"pip install '{pinned}'" in next_steps(project)


FAKE_GH = """#!/bin/bash
# A stand-in for GitHub's gh CLI: logs each call; lists one evalrun comment once one was posted.
printf '%s\\n' "$*" >> "$GH_LOG"
case "$*" in
  *"-X POST"*) touch "$GH_STATE" ;;
  *"-X PATCH"*) ;;
  *) [ -f "$GH_STATE" ] && echo 4242 ;;
esac
exit 0
"""


@pytest.mark.slow
@pytest.mark.network
def test_workflow_commands_run_and_keep_one_sticky_comment(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each `evalrun ...` line of the generated workflow runs against the scaffolded project
    (pointed at the 127.0.0.1 test server); the comment step posts once, then edits that comment."""
    import shlex

    from click.testing import CliRunner
    from tests.support.openai_server import OpenAIServer

    from evalrun.cli import main

    with OpenAIServer() as server:
        for side in ("baseline", "candidate"):
            path = project / "evals" / f"{side}.yaml"
            cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
            cfg.update(model="openai/scaffold-test", api_base=server.base_url, api_key_env="SCAFFOLD_KEY")
            path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        monkeypatch.setenv("SCAFFOLD_KEY", "sk-scaffold-test-0000")
        # what the compare step's env gives (the run page, which lists the report artifact)
        monkeypatch.setenv("EVALRUN_REPORT_URL", "https://github.com/team/shop/actions/runs/1")
        monkeypatch.chdir(project)
        wf = yaml.safe_load((project / ".github" / "workflows" / "evalrun.yml").read_text(encoding="utf-8"))
        steps = wf["jobs"]["gate"]["steps"]
        lines = [ln.strip() for s in steps for ln in s.get("run", "").splitlines() if ln.strip().startswith("evalrun ")]
        assert lines, "the workflow runs evalrun"
        for line in lines:
            result = CliRunner().invoke(main, shlex.split(line)[1:])
            assert result.exit_code in (0, 1, 3), (line, result.output)
    assert "(https://github.com/team/shop/actions/runs/1)" in (project / "reports" / "ci" / "summary.md").read_text(encoding="utf-8")

    comment = next(s for s in steps if s.get("name") == "Comment on the pull request")
    assert comment["if"] == "always() && github.event_name == 'pull_request'"
    assert comment["env"]["GH_TOKEN"] == "${{ github.token }}"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "gh").write_text(FAKE_GH, encoding="utf-8")
    (bindir / "gh").chmod(0o755)
    log, state = tmp_path / "gh.log", tmp_path / "gh.state"
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "GH_LOG": str(log), "GH_STATE": str(state), "PR": "7",
           "GITHUB_REPOSITORY": "team/shop", "CODE": "1", "REPORT_URL": "https://github.com/team/shop/actions/runs/1/artifacts/9"}
    for _ in range(2):
        proc = subprocess.run(["bash", "-e", "-c", comment["run"]], cwd=project, env=env,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    calls = log.read_text(encoding="utf-8").splitlines()
    writes = [c for c in calls if " -X " in c]
    assert len(writes) == 2
    assert writes[0].startswith("api -X POST repos/team/shop/issues/7/comments")
    assert writes[1].startswith("api -X PATCH repos/team/shop/issues/comments/4242")  # the same comment, edited
    body = (project / "reports" / "ci" / "pr-comment.md").read_text(encoding="utf-8")
    assert body.startswith("<!-- evalrun-sticky-comment -->\n")
    assert (project / "reports" / "ci" / "summary.md").read_text(encoding="utf-8")[:200] in body
    assert "[HTML report (artifact)](https://github.com/team/shop/actions/runs/1/artifacts/9)" in body
