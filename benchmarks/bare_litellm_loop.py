"""The reference: the same requests as evalrun, as a bare asyncio loop over litellm.acompletion.

Run by ``bench_compare.py`` as a measured child::

    python benchmarks/bare_litellm_loop.py REQUESTS.json --concurrency 50 [--model-prefix aiohttp_openai/]

REQUESTS.json is a list of ``{model, messages, params, api_base, timeout_s}`` (what
evalrun's planner produces for the suite). One event loop, a semaphore, ``max_retries=0``,
the offline switches set before the import — and nothing else: no journal, no scoring, no
report. Prints one JSON line: import seconds, loop seconds, calls, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("requests")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--model-prefix", help="replace the model's provider prefix (e.g. aiohttp_openai/: "
                        "litellm's own aiohttp transport for OpenAI-compatible endpoints)")
    args = parser.parse_args(argv)
    with open(args.requests, encoding="utf-8") as fh:
        requests: list[dict[str, Any]] = json.load(fh)
    if args.model_prefix:
        for req in requests:
            req["model"] = args.model_prefix + req["model"].split("/", 1)[1]
    key = os.environ.get("EVALRUN_BENCH_KEY", "sk-bench")

    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["LITELLM_OFFLINE_MODE"] = "true"
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    t0 = time.perf_counter()
    import litellm

    litellm.suppress_debug_info = True
    import_s = time.perf_counter() - t0

    async def go() -> tuple[int, int]:
        sem = asyncio.Semaphore(args.concurrency)
        errors = 0

        async def one(req: dict[str, Any]) -> None:
            nonlocal errors
            async with sem:
                try:
                    await litellm.acompletion(
                        model=req["model"], messages=req["messages"], api_base=req["api_base"], api_key=key,
                        timeout=req["timeout_s"], max_retries=0, num_retries=0, drop_params=True,
                        **{k: v for k, v in req["params"].items() if v is not None},
                    )
                except Exception:
                    errors += 1

        await asyncio.gather(*(one(r) for r in requests))
        close = getattr(litellm, "close_litellm_async_clients", None)
        if close is not None:
            await close()
        return len(requests), errors

    t1 = time.perf_counter()
    calls, errors = asyncio.run(go())
    loop_s = time.perf_counter() - t1
    print(json.dumps({"import_s": import_s, "loop_s": loop_s, "calls": calls, "errors": errors}))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
