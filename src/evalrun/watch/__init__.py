"""Stages 2–4 on live traffic: `evalrun watch` applies the rollback triggers to real logs.

The library surface: ``load_plan`` (rollout.yaml), ``evaluate`` / ``watch`` (measure a
stage and decide), ``decide_stage`` (the pure verdict function), ``write_demo`` (the
traffic generator), ``plan_from_run`` (a plan from a Stage-1 run folder). Heavy modules
(ibis, duckdb, pyarrow) are imported only when a stage is measured.
"""

from __future__ import annotations

from evalrun.watch.plan import Plan, Stage, Trigger, load_plan

__all__ = ["Plan", "Stage", "Trigger", "load_plan"]
