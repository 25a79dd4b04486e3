"""Model-graded checks ("judges"): specifications, prompts, answer parsing, calibration, statistics.

Pure functions and frozen models; the only I/O is reading this package's own file formats
(calibration files, judge templates, criteria files). Judge *calls* belong to the runner:
this package renders the messages to send and reads the answers that come back.

* :mod:`~evalrun.judging.spec` — ``rubric`` / ``pairwise`` / ``similar`` check models and the
  suite's ``judge:`` settings;
* :mod:`~evalrun.judging.prompting` — the bundled (replaceable) Jinja prompts;
* :mod:`~evalrun.judging.answers` — parsing judge answers, combining pairwise orders;
* :mod:`~evalrun.judging.calibration` — the calibration file format and scoring a judge on it;
* :mod:`~evalrun.judging.agreement` — accuracy, κ, sensitivity, specificity, Youden's J;
* :mod:`~evalrun.judging.correction` — Rogan–Gladen corrected rates and paired differences;
* :mod:`~evalrun.judging.preference` — pairwise win/tie/loss, net preference, position bias;
* :mod:`~evalrun.judging.reliability` — when a judge may not decide a rule;
* :mod:`~evalrun.judging.similarity` — the ``similar`` check's cosine similarity.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalrun.judging.agreement import (
        BinaryAgreement,
        CategoricalAgreement,
        Estimate,
        binary_agreement,
        categorical_agreement,
        cohen_kappa,
    )
    from evalrun.judging.answers import (
        ORDERS,
        JudgeError,
        Order,
        PairOutcome,
        PairwiseVerdict,
        Preferred,
        RubricVerdict,
        answer_schema,
        combine_orders,
        parse_pairwise_answer,
        parse_rubric_answer,
        response_format,
    )
    from evalrun.judging.calibration import (
        BUNDLED_CALIBRATION,
        CalibrationFileError,
        CalibrationSet,
        PairwiseCalibration,
        PairwiseItem,
        RubricCalibration,
        RubricItem,
        load_calibration,
        score_pairwise_calibration,
        score_rubric_calibration,
    )
    from evalrun.judging.correction import (
        CorrectedDifference,
        CorrectedRate,
        ErrorRates,
        corrected_difference,
        corrected_rate,
        rogan_gladen,
    )
    from evalrun.judging.preference import (
        CaseScore,
        NetPreference,
        PositionBias,
        case_score,
        net_preference,
        position_bias,
    )
    from evalrun.judging.prompting import (
        JudgeTemplate,
        Message,
        load_template,
        neutralise,
        render_pairwise,
        render_pairwise_both,
        render_rubric,
    )
    from evalrun.judging.reliability import (
        Reliability,
        ReliabilityPolicy,
        pairwise_reliability,
        rubric_reliability,
    )
    from evalrun.judging.similarity import SimilarVerdict, cosine_similarity, similar_verdict
    from evalrun.judging.spec import (
        DEFAULT_JUDGE_PARAMS,
        JUDGE_CHECKS,
        JudgeCheck,
        JudgeOverride,
        JudgeSettings,
        PairwiseCheck,
        ResolvedJudge,
        RubricCheck,
        SimilarCheck,
        parse_judge_check,
        resolve_criteria,
        resolve_judge,
    )

# Loaded on first use: validating a suite's judge checks (project loading) needs only the
# spec models, not numpy, scipy or jinja2.
_LAZY: dict[str, str] = {
    "BUNDLED_CALIBRATION": "evalrun.judging.calibration",
    "BinaryAgreement": "evalrun.judging.agreement",
    "CalibrationFileError": "evalrun.judging.calibration",
    "CalibrationSet": "evalrun.judging.calibration",
    "CaseScore": "evalrun.judging.preference",
    "CategoricalAgreement": "evalrun.judging.agreement",
    "CorrectedDifference": "evalrun.judging.correction",
    "CorrectedRate": "evalrun.judging.correction",
    "DEFAULT_JUDGE_PARAMS": "evalrun.judging.spec",
    "ErrorRates": "evalrun.judging.correction",
    "Estimate": "evalrun.judging.agreement",
    "JUDGE_CHECKS": "evalrun.judging.spec",
    "JudgeCheck": "evalrun.judging.spec",
    "JudgeError": "evalrun.judging.answers",
    "JudgeOverride": "evalrun.judging.spec",
    "JudgeSettings": "evalrun.judging.spec",
    "JudgeTemplate": "evalrun.judging.prompting",
    "Message": "evalrun.judging.prompting",
    "NetPreference": "evalrun.judging.preference",
    "ORDERS": "evalrun.judging.answers",
    "Order": "evalrun.judging.answers",
    "PairOutcome": "evalrun.judging.answers",
    "PairwiseCalibration": "evalrun.judging.calibration",
    "PairwiseCheck": "evalrun.judging.spec",
    "PairwiseItem": "evalrun.judging.calibration",
    "PairwiseVerdict": "evalrun.judging.answers",
    "PositionBias": "evalrun.judging.preference",
    "Preferred": "evalrun.judging.answers",
    "Reliability": "evalrun.judging.reliability",
    "ReliabilityPolicy": "evalrun.judging.reliability",
    "ResolvedJudge": "evalrun.judging.spec",
    "RubricCalibration": "evalrun.judging.calibration",
    "RubricCheck": "evalrun.judging.spec",
    "RubricItem": "evalrun.judging.calibration",
    "RubricVerdict": "evalrun.judging.answers",
    "SimilarCheck": "evalrun.judging.spec",
    "SimilarVerdict": "evalrun.judging.similarity",
    "answer_schema": "evalrun.judging.answers",
    "binary_agreement": "evalrun.judging.agreement",
    "case_score": "evalrun.judging.preference",
    "categorical_agreement": "evalrun.judging.agreement",
    "cohen_kappa": "evalrun.judging.agreement",
    "combine_orders": "evalrun.judging.answers",
    "corrected_difference": "evalrun.judging.correction",
    "corrected_rate": "evalrun.judging.correction",
    "cosine_similarity": "evalrun.judging.similarity",
    "load_calibration": "evalrun.judging.calibration",
    "load_template": "evalrun.judging.prompting",
    "net_preference": "evalrun.judging.preference",
    "neutralise": "evalrun.judging.prompting",
    "pairwise_reliability": "evalrun.judging.reliability",
    "parse_judge_check": "evalrun.judging.spec",
    "parse_pairwise_answer": "evalrun.judging.answers",
    "parse_rubric_answer": "evalrun.judging.answers",
    "position_bias": "evalrun.judging.preference",
    "render_pairwise": "evalrun.judging.prompting",
    "render_pairwise_both": "evalrun.judging.prompting",
    "render_rubric": "evalrun.judging.prompting",
    "resolve_criteria": "evalrun.judging.spec",
    "resolve_judge": "evalrun.judging.spec",
    "response_format": "evalrun.judging.answers",
    "rogan_gladen": "evalrun.judging.correction",
    "rubric_reliability": "evalrun.judging.reliability",
    "score_pairwise_calibration": "evalrun.judging.calibration",
    "score_rubric_calibration": "evalrun.judging.calibration",
    "similar_verdict": "evalrun.judging.similarity",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BUNDLED_CALIBRATION",
    "DEFAULT_JUDGE_PARAMS",
    "JUDGE_CHECKS",
    "ORDERS",
    "BinaryAgreement",
    "CalibrationFileError",
    "CalibrationSet",
    "CaseScore",
    "CategoricalAgreement",
    "CorrectedDifference",
    "CorrectedRate",
    "ErrorRates",
    "Estimate",
    "JudgeCheck",
    "JudgeError",
    "JudgeOverride",
    "JudgeSettings",
    "JudgeTemplate",
    "Message",
    "NetPreference",
    "Order",
    "PairOutcome",
    "PairwiseCalibration",
    "PairwiseCheck",
    "PairwiseItem",
    "PairwiseVerdict",
    "PositionBias",
    "Preferred",
    "Reliability",
    "ReliabilityPolicy",
    "ResolvedJudge",
    "RubricCalibration",
    "RubricCheck",
    "RubricItem",
    "RubricVerdict",
    "SimilarCheck",
    "SimilarVerdict",
    "answer_schema",
    "binary_agreement",
    "case_score",
    "categorical_agreement",
    "cohen_kappa",
    "combine_orders",
    "corrected_difference",
    "corrected_rate",
    "cosine_similarity",
    "load_calibration",
    "load_template",
    "net_preference",
    "neutralise",
    "pairwise_reliability",
    "parse_judge_check",
    "parse_pairwise_answer",
    "parse_rubric_answer",
    "position_bias",
    "render_pairwise",
    "render_pairwise_both",
    "render_rubric",
    "resolve_criteria",
    "resolve_judge",
    "response_format",
    "rogan_gladen",
    "rubric_reliability",
    "score_pairwise_calibration",
    "score_rubric_calibration",
    "similar_verdict",
]
