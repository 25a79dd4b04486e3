"""The plan of a run: every (case, sample, side) call with its request and its request key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalrun.execution.runner import PlannedCall, order_calls
from evalrun.execution.store import request_key
from evalrun.project.loader import Project
from evalrun.providers.base import Pricing, ProviderRequest
from evalrun.records import SIDES, Side
from evalrun.secrets import register_secret

__all__ = ["plan_calls", "side_request"]

AA_SALT = 1_000_000
"""Added to the candidate's sample index in an A/A run: both sides make the same request,
and the salt keeps a cache from answering the candidate with the baseline's response."""


def _side_settings(project: Project, side: Side, with_keys: bool) -> dict[str, Any]:
    v = project.variant(side)
    if with_keys:  # whatever this process stores is scrubbed of them (see secrets.scrub_registered)
        register_secret(v.api_key() if v.config.api_key_env else None)
        for d in v.router_model_list() or []:
            register_secret(d["litellm_params"].get("api_key"))
    pricing = v.config.pricing
    return {
        "params": v.config.params.to_call_params(),
        "pricing": Pricing(pricing.input_per_mtok, pricing.output_per_mtok) if pricing else None,
        "api_key": v.api_key() if (with_keys and v.config.api_key_env) else None,
        "router": ({"model_list": v.router_model_list(with_keys=with_keys),
                    "routing_strategy": v.config.router.routing_strategy} if v.config.router else None),
        # What identifies the deployments (never the keys) goes into the request key.
        "router_key": v.router_model_list(with_keys=False) if v.config.router else None,
    }


def side_request(project: Project, side: Side) -> ProviderRequest:
    """The request settings of ``side`` (model, endpoint, params, key, router), no messages:
    what decides how its calls are made, before any prompt is rendered."""
    v, s = project.variant(side), _side_settings(project, side, with_keys=True)
    return ProviderRequest(model=v.config.model, messages=[], params=dict(s["params"]), api_base=v.config.api_base,
                           api_key=s["api_key"], timeout_s=v.config.timeout_s, pricing=s["pricing"],
                           router=s["router"])


def plan_calls(project: Project, case_ids: Sequence[str] | None = None, *, with_keys: bool = True) -> list[PlannedCall]:
    """Every (case, sample, side) call, interleaved so both sides see the same conditions:
    a seeded random order of (case, sample) pairs, sides adjacent (``runner.order_calls``).

    ``with_keys=False`` plans without reading API keys (rescoring, estimates).
    """
    wanted = set(case_ids) if case_ids is not None else None
    settings = {side: _side_settings(project, side, with_keys) for side in SIDES}
    max_bytes = project.suite.config.max_response_bytes()
    plan: list[PlannedCall] = []
    for case in project.cases:
        if wanted is not None and case.id not in wanted:
            continue
        messages = {side: project.renderers[side].render(case) for side in SIDES}
        for sample in range(project.suite.config.samples):
            for side in SIDES:
                v, s = project.variant(side), settings[side]
                params = dict(s["params"])
                salt = sample + (AA_SALT if project.aa_mode and side == "candidate" else 0)
                key = request_key(
                    model=v.config.model, api_base=v.config.api_base, messages=messages[side],
                    params={**params, "router": s["router_key"]} if s["router_key"] else params,
                    sample=salt, model_path=str(v.model_path) if v.model_path else None,
                )
                req = ProviderRequest(
                    model=v.config.model, messages=messages[side], params=params, api_base=v.config.api_base,
                    api_key=s["api_key"], timeout_s=v.config.timeout_s, pricing=s["pricing"],
                    local_model_path=str(v.model_path) if v.model_path else None, router=s["router"],
                    metadata={"case_id": case.id, "side": side, "sample": sample, "kind": case.kind},
                    max_response_bytes=max_bytes,
                )
                plan.append(PlannedCall(case.id, side, sample, req, key))
    return order_calls(plan, project.suite.config.seed)
