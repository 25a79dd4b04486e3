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
