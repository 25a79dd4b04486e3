"""The floor: the same requests as evalrun, posted with bare aiohttp (no litellm, no SDK).

Run by ``bench_peers.py`` as a measured child::

    python benchmarks/raw_aiohttp_loop.py REQUESTS.json --concurrency 50

REQUESTS.json is what ``bench_peers.py`` plans (``{model, messages, params, api_base,
timeout_s}``). One event loop, one session, a semaphore; each answer is read and its JSON
decoded, nothing else. Prints one JSON line: import seconds, loop seconds, calls, errors.
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
    args = parser.parse_args(argv)
    with open(args.requests, encoding="utf-8") as fh:
        requests: list[dict[str, Any]] = json.load(fh)
    key = os.environ.get("EVALRUN_BENCH_KEY", "sk-bench")
    t0 = time.perf_counter()
    import aiohttp

    import_s = time.perf_counter() - t0

    async def go() -> tuple[int, int]:
        sem = asyncio.Semaphore(args.concurrency)
        errors = 0
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one(req: dict[str, Any]) -> None:
                nonlocal errors
                body = {"model": req["model"].split("/", 1)[1], "messages": req["messages"],
                        **{k: v for k, v in req["params"].items() if v is not None}}
                async with sem:
                    try:
                        async with session.post(req["api_base"].rstrip("/") + "/chat/completions", json=body,
                                                headers=headers,
                                                timeout=aiohttp.ClientTimeout(total=req["timeout_s"])) as resp:
                            data = await resp.json()
                            if resp.status != 200 or not data.get("choices"):
                                errors += 1
                    except Exception:
                        errors += 1

            await asyncio.gather(*(one(r) for r in requests))
        return len(requests), errors

    t1 = time.perf_counter()
    calls, errors = asyncio.run(go())
    loop_s = time.perf_counter() - t1
    print(json.dumps({"import_s": import_s, "loop_s": loop_s, "calls": calls, "errors": errors}))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
