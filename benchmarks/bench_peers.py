"""evalrun against its peers, side by side in one run: same server, same requests, interleaved.

    python benchmarks/bench_peers.py                      # N=1,000 x 2 models, R=3, + N=10,000 memory
    python benchmarks/bench_peers.py --n 1000 --repeat 5 --workers 1 --workers 2
    python benchmarks/bench_peers.py --promptfoo /path/to/promptfoo --memory-n 0
    python benchmarks/bench_peers.py --before-src /path/to/old/checkout/src   # + "evalrun before"

One 127.0.0.1 OpenAI-compatible test server (its own process, ``--latency-ms`` per request,
its CPU never counted), N cases x 2 models, one ``contains`` check per case, concurrency 50.
Each repetition runs every tool once, as a child process measured with ``os.wait4`` (CPU of
the child and every process it reaped; peak RSS of its largest process; the summed RSS of
its whole tree sampled every 50 ms), in a rotated order so no tool always runs first:

* ``raw aiohttp`` — the floor: the same bodies posted with a bare aiohttp loop;
* ``bare litellm`` — a single-process ``litellm.acompletion`` loop (``openai/`` models),
  ``bare litellm aiohttp_openai`` — the same loop on litellm's own aiohttp transport;
* ``evalrun`` — ``evalrun compare --no-cache`` with default settings (whole job: load,
  calls, journal, scoring, statistics, report), ``evalrun workers=K`` for each ``--workers``,
  and ``evalrun via litellm`` (``EVALRUN_TRANSPORT=litellm``: every call through
  ``litellm.acompletion``, the path before the direct transport);
* ``promptfoo`` — ``promptfoo eval --no-cache -j 50 --no-progress-bar --no-table`` (it writes
  its results database, as evalrun writes its run folder), telemetry, update check and
  sharing off, its config folder in a temp dir. Its path: ``--promptfoo``, else
  ``$PROMPTFOO_BIN``, else /work/tools/promptfoo/node_modules/.bin/promptfoo; skipped with a
  line saying so when absent.

Printed: medians (and ranges) of wall seconds, CPU seconds and ms per call, peak RSS, the
ratios against the bare litellm loop and promptfoo, the target lines, and "others' cores"
(CPU the rest of the machine used meanwhile / wall: on 2 cores, load from other work).
Then, unless ``--memory-n 0``, one evalrun run with default settings at ``--memory-n``
cases (10,000) for its memory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _common import (
    ROOT,
    Measured,
    child_env,
    fmt_row,
    median,
    run_measured,
    test_server,
    write_bench_project,
)

DEFAULT_PROMPTFOO = Path("/work/tools/promptfoo/node_modules/.bin/promptfoo")
PROMPTFOO_ENV = {
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "PROMPTFOO_DISABLE_UPDATE": "1",
    "PROMPTFOO_DISABLE_SHARING": "1",
    "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1",
}
TARGET_VS_BARE = 0.6
TARGET_VS_PROMPTFOO = 0.5
TARGET_MEMORY_MB = 400.0


def contains_cases(n: int) -> list[dict[str, Any]]:
    """N cases, one ``contains`` check each (the echo server answers with the question)."""
    cohorts = ("electronics", "fashion", "grocery", "travel")
    return [{"id": f"b{i:05d}", "kind": "representative", "cohort": cohorts[i % 4],
             "vars": {"question": f"case b{i:05d}: what is the return policy for item {i}?"},
             "expect": [{"contains": {"value": f"b{i:05d}"}}]} for i in range(n)]


def plan_requests(b: Path, c: Path, target: Path) -> int:
    """The exact requests evalrun makes, for the bare loops (no key read, no litellm)."""
    from evalrun import api

    project = api.load_project(b, c)
    rows = [{"model": p.request.model, "messages": p.request.messages, "params": p.request.params,
             "api_base": p.request.api_base, "timeout_s": p.request.timeout_s}
            for p in api.plan_calls(project, with_keys=False)]
    target.write_text(json.dumps(rows), encoding="utf-8")
    return len(rows)


def write_promptfoo(root: Path, cases: list[dict[str, Any]], url: str) -> Path:
    """The same suite for promptfoo: a chat prompt per model (its system prompt), one contains assert."""
    root.mkdir(parents=True, exist_ok=True)
    prompts, providers = [], []
    for side in ("baseline", "candidate"):
        (root / f"{side}.json").write_text(json.dumps([
            {"role": "system", "content": f"You are the {side} shop assistant. Answer briefly."},
            {"role": "user", "content": "{{ question }}"}]), encoding="utf-8")
        prompts.append({"id": f"file://{side}.json", "label": side})
        providers.append({"id": f"openai:chat:bench-{side}", "label": f"bench-{side}", "prompts": [side],
                          "config": {"apiBaseUrl": url, "temperature": 0, "max_tokens": 128}})
    tests = [{"vars": c["vars"], "assert": [{"type": "contains", "value": c["expect"][0]["contains"]["value"]}]}
             for c in cases]
    config = root / "promptfooconfig.yaml"
    config.write_text(yaml.safe_dump({"description": "evalrun bench", "prompts": prompts, "providers": providers,
                                      "tests": tests}, sort_keys=False), encoding="utf-8")
    return config


@dataclass
class Tool:
    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    check: Callable[[Measured], str | None]  # None when the run did all its calls, else why not
    cleanup: Callable[[], None] = lambda: None


def _loop_check(calls: int) -> Callable[[Measured], str | None]:
    def check(m: Measured) -> str | None:
        if m.returncode != 0:
            return f"rc {m.returncode}: {m.stderr[-1500:]}"
        m.extra = json.loads(m.stdout.strip().splitlines()[-1])
        return None if m.extra.get("calls") == calls and not m.extra.get("errors") else f"result {m.extra}"
    return check


def _evalrun_check(out: Path, calls: int) -> Callable[[Measured], str | None]:
    def check(m: Measured) -> str | None:
        if m.returncode not in (0, 1, 3):
            return f"rc {m.returncode}: {m.stderr[-3000:]}"
        rows = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in out.glob("journal*.jsonl"))
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        errors = sum(int(side.get("errors", 0)) for side in summary.get("calls", {}).values()
                     if isinstance(side, dict))
        return None if rows == calls and not errors else f"journaled {rows} of {calls} calls, {errors} errors"
    return check


def _promptfoo_check(calls: int) -> Callable[[Measured], str | None]:
    def check(m: Measured) -> str | None:
        found = re.search(r"([\d,]+) passed", m.stdout)
        passed = int(found.group(1).replace(",", "")) if found else -1
        if m.returncode != 0 or passed != calls:
            return f"rc {m.returncode}, {passed} of {calls} passed: {(m.stdout + m.stderr)[-1500:]}"
        return None
    return check


def _stats(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1000, help="cases (x 2 models)")
    parser.add_argument("--repeat", "-r", type=int, default=3, help="repetitions, interleaved")
    parser.add_argument("--workers", type=int, action="append", help="explicit evalrun worker counts (default: 1, 2)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--promptfoo", type=Path, help="promptfoo binary (else $PROMPTFOO_BIN, else the /work/tools one)")
    parser.add_argument("--memory-n", type=int, default=10000, help="cases of the evalrun memory run (0: skip)")
    parser.add_argument("--skip", action="append", default=[], help="skip tools whose name contains this")
    parser.add_argument("--src", type=Path, help="measure another checkout's src (first on PYTHONPATH)")
    parser.add_argument("--before-src", type=Path, help="also measure this checkout's src as 'evalrun before' "
                        "(default settings), e.g. the code before a change")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a child is killed")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args(argv)
    worker_counts = args.workers or [1, 2]
    calls = 2 * args.n
    env = child_env(src=args.src)
    promptfoo = args.promptfoo or (Path(os.environ["PROMPTFOO_BIN"]) if os.environ.get("PROMPTFOO_BIN") else
                                   DEFAULT_PROMPTFOO)
    if not promptfoo.is_file():
        print(f"promptfoo: skipped ({promptfoo} not found; pass --promptfoo PATH or set PROMPTFOO_BIN)")
    load_before = os.getloadavg()
    runs: dict[str, list[Measured]] = {}
    order: list[str] = []

    with tempfile.TemporaryDirectory(prefix="evalrun-peers-") as tmp, test_server(args.latency_ms) as server:
        root = Path(tmp)
        cases = contains_cases(args.n)
        b, c = write_bench_project(root / "proj", args.n, server.url, concurrency=args.concurrency, cases=cases)
        suite_file = b.parent / "suite.yaml"
        suite_text = suite_file.read_text(encoding="utf-8")
        requests = root / "requests.json"
        assert plan_requests(b, c, requests) == calls
        bench = ROOT / "benchmarks"

        def tools(rep: int) -> list[Tool]:
            loop = ["--concurrency", str(args.concurrency)]
            found = [
                Tool("raw aiohttp", [sys.executable, str(bench / "raw_aiohttp_loop.py"), str(requests), *loop], env,
                     root, _loop_check(calls)),
                Tool("bare litellm", [sys.executable, str(bench / "bare_litellm_loop.py"), str(requests), *loop], env,
                     root, _loop_check(calls)),
                Tool("bare litellm aiohttp_openai", [sys.executable, str(bench / "bare_litellm_loop.py"),
                                                     str(requests), *loop, "--model-prefix", "aiohttp_openai/"],
                     env, root, _loop_check(calls)),
            ]
            variants: list[tuple[str, int | None, dict[str, str]]] = [("evalrun default", None, {})]
            variants += [(f"evalrun workers={w}", w, {}) for w in worker_counts]
            variants.append(("evalrun via litellm", None, {"EVALRUN_TRANSPORT": "litellm"}))
            if args.before_src is not None:
                variants.append(("evalrun before", None, {"PYTHONPATH": child_env(src=args.before_src)["PYTHONPATH"]}))
            for name, workers, extra in variants:
                out = root / f"run-{name.replace(' ', '_')}-{rep}"
                cmd = [sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--no-cache", "--out", str(out),
                       "--quiet"] + ([] if workers is None else ["--workers", str(workers)])
                found.append(Tool(name, cmd, {**env, **extra}, root, _evalrun_check(out, calls),
                                  lambda out=out: shutil.rmtree(out, ignore_errors=True)))
            if promptfoo.is_file():
                pf_dir = root / "promptfoo"
                config = pf_dir / "promptfooconfig.yaml"
                if not config.exists():
                    write_promptfoo(pf_dir, cases, server.url)
                pf_env = {**env, **PROMPTFOO_ENV, "OPENAI_API_KEY": env["EVALRUN_BENCH_KEY"],
                          "PROMPTFOO_CONFIG_DIR": str(pf_dir / f"home-{rep}")}
                found.append(Tool("promptfoo", [str(promptfoo), "eval", "-c", str(config), "--no-cache", "-j",
                                                str(args.concurrency), "--no-progress-bar", "--no-table"],
                                  pf_env, pf_dir, _promptfoo_check(calls),
                                  lambda d=pf_dir / f"home-{rep}": shutil.rmtree(d, ignore_errors=True)))
            return [t for t in found if not any(s in t.name for s in args.skip)]

        for rep in range(args.repeat):
            these = tools(rep)
            shift = rep % len(these)
            for tool in these[shift:] + these[:shift]:
                suite_file.write_text(suite_text, encoding="utf-8")
                m = run_measured(tool.cmd, env=tool.env, cwd=tool.cwd, timeout_s=args.timeout,
                                 server_pid=server.pid, tree_rss=True)
                problem = tool.check(m)
                tool.cleanup()
                if problem is not None:
                    print(f"{tool.name} failed: {problem}", file=sys.stderr)
                    return 1
                if tool.name not in runs:
                    order.append(tool.name)
                runs.setdefault(tool.name, []).append(m)
                print(f"  repeat {rep + 1}/{args.repeat}: {tool.name} {m.wall_s:.2f} s", file=sys.stderr, flush=True)

        memory: dict[str, Measured] = {}
        if args.memory_n:
            mem_root = root / "memory"
            mb, mc = write_bench_project(mem_root, args.memory_n, server.url, concurrency=args.concurrency,
                                         cases=contains_cases(args.memory_n))
            mem_envs = {"evalrun default": env}
            if args.before_src is not None:
                mem_envs["evalrun before"] = child_env(src=args.before_src)
            for name, mem_env in mem_envs.items():
                out = mem_root / "run"
                m = run_measured([sys.executable, "-m", "evalrun", "compare", str(mb), str(mc), "--no-cache",
                                  "--out", str(out), "--quiet"], env=mem_env, cwd=mem_root, timeout_s=args.timeout,
                                 server_pid=server.pid, tree_rss=True)
                problem = _evalrun_check(out, 2 * args.memory_n)(m)
                shutil.rmtree(out, ignore_errors=True)
                if problem is not None:
                    print(f"{name} memory run failed: {problem}", file=sys.stderr)
                    return 1
                memory[name] = m

    ideal = calls / args.concurrency * args.latency_ms / 1000.0
    print(f"\nN = {args.n:,} cases x 2 models = {calls:,} calls, one contains check; server latency "
          f"{args.latency_ms:.0f} ms, concurrency {args.concurrency} (ideal {ideal:.1f} s); R = {args.repeat} "
          f"interleaved; median (min-max); {os.cpu_count()} cores, load average {load_before[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    bare = median([m.wall_s for m in runs.get("bare litellm", [])]) if "bare litellm" in runs else None
    pf = median([m.wall_s for m in runs.get("promptfoo", [])]) if "promptfoo" in runs else None
    widths = (28, 20, 20, 11, 14, 15, 10, 12, 8)
    print(fmt_row(("tool", "wall s", "CPU s", "CPU ms/call", "peak RSS MB", "tree RSS MB", "vs bare", "vs promptfoo",
                   "others"), widths))
    for name in order:
        ms = runs[name]
        wall = median([m.wall_s for m in ms])
        print(fmt_row((name, _stats([m.wall_s for m in ms]), _stats([m.cpu_s for m in ms]),
                       f"{median([m.cpu_s for m in ms]) / calls * 1000:.2f}",
                       f"{median([m.max_rss_mb for m in ms]):.0f}", f"{median([m.tree_rss_mb for m in ms]):.0f}",
                       f"{wall / bare:.2f}x" if bare else "-", f"{wall / pf:.2f}x" if pf else "-",
                       f"{median([m.others_cpu_s / m.wall_s for m in ms]):.2f}"), widths))
    default = median([m.wall_s for m in runs["evalrun default"]]) if "evalrun default" in runs else None
    if default is not None and bare:
        ratio = default / bare
        print(f"target evalrun <= {TARGET_VS_BARE}x bare litellm: {ratio:.2f}x "
              f"({'met' if ratio <= TARGET_VS_BARE else 'NOT met'})")
    if default is not None and pf:
        ratio = default / pf
        print(f"target evalrun <= {TARGET_VS_PROMPTFOO}x promptfoo: {ratio:.2f}x "
              f"({'met' if ratio <= TARGET_VS_PROMPTFOO else 'NOT met'})")
    for name, m in memory.items():
        peak = max(m.max_rss_mb, m.tree_rss_mb)
        print(f"memory: {name}, N = {args.memory_n:,} x 2 = {2 * args.memory_n:,} calls: wall {m.wall_s:.1f} s, "
              f"CPU {m.cpu_s:.1f} s, largest process {m.max_rss_mb:.0f} MB, whole tree {m.tree_rss_mb:.0f} MB "
              f"(summed RSS, shared pages counted per process); target <= {TARGET_MEMORY_MB:.0f} MB: "
              f"{'met' if peak <= TARGET_MEMORY_MB else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({
            "n": args.n, "repeat": args.repeat, "load_before": load_before,
            "runs": {name: [m.__dict__ | {"stdout": "", "stderr": ""} for m in ms] for name, ms in runs.items()},
            "memory": {name: m.__dict__ | {"stdout": "", "stderr": ""} for name, m in memory.items()},
        }, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
