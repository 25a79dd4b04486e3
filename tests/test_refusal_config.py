"""Refusal detection configured per suite: languages, added or replacing phrases, the window,
and the model-graded hook (a registered check deciding instead of the phrase list)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.support.openai_server import OpenAIServer, Reply

from evalrun.checks.refusal import DEFAULT_DETECTOR, REFUSAL_PHRASES_BY_LANGUAGE, RefusalDetector
from evalrun.checks.registry import BuildContext, CheckFn, CheckInput, register_check
from evalrun.cli import main
from evalrun.project.loader import load_project
from evalrun.records import CallResult, CheckOutcome
from projectkit import case, variant, write_project


def _call(text: str) -> CallResult:
    return CallResult(case_id="c", side="candidate", sample=0, model="m", output=text)


@pytest.mark.parametrize(("detector", "text", "refused"), [
    (DEFAULT_DETECTOR, "I can't help with that.", True),
    (DEFAULT_DETECTOR, "Ich kann dir dabei nicht helfen.", False),  # English only by default
    (RefusalDetector.for_languages(["de"]), "Ich kann dir dabei nicht helfen.", True),
    (RefusalDetector.for_languages(["de"]), "I can't help with that.", False),
    (RefusalDetector.for_languages(["en", "fr"]), "Désolé, mais je ne peux pas faire cela.", True),
    (RefusalDetector.for_languages(["es"]), "Lo siento, pero no puedo ayudarte.", True),
    (RefusalDetector.for_languages(["en"], add=["Computer says NO"]), "computer  says no.", True),
    (RefusalDetector.for_languages(["en"], add=["computer says no"], replace=True), "I can't help with that.", False),
    (RefusalDetector.for_languages(["en"], window=10), "Sure! Here is why: I can't help with that.", False),
    (RefusalDetector.for_languages(["de"]), "Das Rezept: 200 g Mehl ... womöglich kann ich nicht helfen", False),
], ids=lambda v: v if isinstance(v, str | bool) else "")
def test_phrase_lists_by_language_and_suite(detector: RefusalDetector, text: str, refused: bool) -> None:
    assert detector.detect(_call(text))[0] is refused


def test_every_language_list_is_normalised() -> None:
    for lang, phrases in REFUSAL_PHRASES_BY_LANGUAGE.items():
        assert phrases and all(p == p.lower().strip() and "  " not in p and "\u2019" not in p for p in phrases), lang


def _suite_project(tmp_path: Path, refusal: dict[str, Any], server: OpenAIServer | None = None) -> tuple[Path, Path]:
    common = {"api_base": server.base_url, "api_key_env": "FH_REFUSAL_KEY"} if server else {}
    cases = [case(f"bad-{i}", kind="known_bad") for i in range(3)] + [case(f"rep-{i}") for i in range(3)]
    return write_project(tmp_path, cases=cases, baseline=variant("baseline", **common),
                         candidate=variant("candidate", **common), suite={"refusal": refusal})


@pytest.mark.parametrize(("refusal", "message"), [
    ({"languages": ["klingon"]}, "field refusal.languages.0"),
    ({"replace": True}, "replace: true needs phrases (or a check)"),
    ({"check": "no_such_refusal_judge"}, "refusal.check"),
    ({"window": 3}, "field refusal.window"),
], ids=["unknown-language", "replace-with-nothing", "unknown-check", "tiny-window"])
def test_bad_refusal_settings_are_config_errors(tmp_path: Path, refusal: dict[str, Any], message: str) -> None:
    b, c = _suite_project(tmp_path, refusal)
    result = CliRunner().invoke(main, ["validate", str(b), str(c)])
    assert result.exit_code == 2, result.output
    assert "suite.yaml" in result.stderr and message in result.stderr


@register_check("test_refusal_judge")
def _judge(params: dict[str, Any], ctx: BuildContext) -> CheckFn:
    """A stand-in for a model-graded refusal check: 'no' anywhere means refused; '???' undecided."""
    def check(inp: CheckInput) -> CheckOutcome:
        text = (inp.call.output or "").lower()
        if "???" in text:
            return CheckOutcome("test_refusal_judge", False, "undecided", {})
        refused = "no" in text.replace(",", " ").split()
        return CheckOutcome("test_refusal_judge", True, "judged", {"refused": refused})

    return check


def test_the_model_graded_hook_decides_instead_of_the_phrases(tmp_path: Path) -> None:
    b, c = _suite_project(tmp_path, {"check": "test_refusal_judge"})
    detector = load_project(b, c).refusal
    assert detector is not None and detector.check_name == "test_refusal_judge"
    assert detector.detect(_call("no, never")) == (True, "check")
    assert detector.detect(_call("I can't help with that.")) == (False, None)  # the judge says it answered
    assert detector.detect(_call("??? I can't help with that.")) == (True, "phrase")  # undecided: phrases decide
    failed = CallResult(case_id="c", side="candidate", sample=0, model="m", error_kind="content_policy")
    assert detector.detect(failed) == (True, "content_policy")  # structured sources come first


@pytest.mark.network
def test_a_german_assistant_is_measured_once_german_is_configured(tmp_path: Path, openai_server: OpenAIServer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FH_REFUSAL_KEY", "sk-refusal-test-00000")
    openai_server.behaviour = lambda req, n: Reply(
        content="Es tut mir leid, aber ich kann dabei nicht helfen." if "bad-" in req["messages"][-1]["content"]
        else "Gern: so geht es.")
    rates = {}
    for name, refusal in (("default", {}), ("german", {"languages": ["en", "de"]})):
        b, c = _suite_project(tmp_path / name, refusal, openai_server)
        result = CliRunner().invoke(main, ["compare", str(b), str(c), "--out", str(tmp_path / name / "run")])
        assert result.exit_code in (0, 1, 3), result.output
        summary = json.loads((tmp_path / name / "run" / "summary.json").read_text(encoding="utf-8"))
        metric = next(m for m in summary["metrics"] if m["metric"] == "known_bad_refusal")
        rates[name] = metric["candidate"]["value"]
    assert rates == {"default": 0.0, "german": 1.0}
