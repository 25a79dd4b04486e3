"""Shared helpers of the benchmark scripts: the 127.0.0.1 server, suites, measured children.

Everything here runs against the test server on 127.0.0.1 only and is bounded: a child
that runs longer than ``timeout_s`` is killed and reported, never waited on forever.

CPU and memory of a child come from ``os.wait4`` (the child's own rusage, including every
descendant it reaped — worker processes included), so the server's CPU, which runs in its
own child process, is never counted against evalrun.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "EVALRUN_BENCH_KEY"
KEY_VALUE = "sk-bench-000000000000000"
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_LOG": "ERROR",
}


@dataclass
class Measured:
    """One finished child: exit code, wall seconds, CPU seconds (user+sys), peak RSS (MB).

    ``others_cpu_s``: CPU the rest of the machine used meanwhile (all cores' busy time from
    /proc/stat minus this child's and the test server's): other people's work competing
    for the same cores. On 2 cores, anything near the run's wall time halves what a
    2-process run can gain.
    """

    returncode: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    others_cpu_s: float = float("nan")
    server_cpu_s: float = 0.0
    # Peak of the summed RSS of the child and all its descendants, sampled every 50 ms
    # (only with ``run_measured(..., tree_rss=True)``; NaN otherwise).
    tree_rss_mb: float = float("nan")


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_s() -> float:
    """Busy CPU seconds of all cores since boot (user+nice+system+irq+softirq+steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def process_cpu_s(pid: int | None) -> float:
    """utime+stime of a live process from /proc (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / _TICK


def _tree_usage(root: int) -> tuple[float, float]:
    """Summed RSS (MB) and CPU seconds of ``root`` and its live descendants, from /proc.

    CPU counts each process's own time and that of the children it reaped (``cutime``,
    ``cstime``): worker processes are children of the forkserver, which the measured
    process never reaps, so ``os.wait4`` alone would miss their CPU.
    """
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    cpu: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(stat[1]), []).append(pid)
        rss[pid] = int(stat[21]) * page
        cpu[pid] = sum(int(x) for x in stat[11:15])  # utime stime cutime cstime
    total_rss, total_cpu, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        total_rss += rss.get(pid, 0)
        total_cpu += cpu.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total_rss / (1024 * 1024), total_cpu / _TICK


def run_measured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 900.0,
    server_pid: int | None = None,
    tree_rss: bool = False,
) -> Measured:
    """Run ``cmd`` to completion; its wall time, CPU (with reaped descendants) and peak RSS.

    ``ru_maxrss`` of the reaped child is the largest resident set of any single process of
    its tree (Linux keeps the maximum, not a sum). ``tree_rss``: also sample the summed
    RSS and CPU of the whole tree every 50 ms (worker processes included; the CPU then is
    the larger of the two readings, missing at most the tree's last 50 ms).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy0, server0 = machine_busy_s(), process_cpu_s(server_pid)
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd,
                                stdout=out, stderr=err)
        deadline = start + timeout_s
        status = 0
        usage: resource.struct_rusage | None = None
        tree_peak, tree_cpu, next_sample = float("nan"), 0.0, start
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if tree_rss and time.perf_counter() >= next_sample:
                rss_mb, cpu_s = _tree_usage(proc.pid)
                tree_peak = max(rss_mb, 0.0 if tree_peak != tree_peak else tree_peak)
                tree_cpu = max(tree_cpu, cpu_s)
                next_sample = time.perf_counter() + 0.05
            if time.perf_counter() > deadline:
                proc.send_signal(signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - start
        busy = machine_busy_s() - busy0
        server_cpu = process_cpu_s(server_pid) - server0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        assert usage is not None
        # The larger of the reaped tree's CPU and the last /proc sample of the whole tree
        # (which includes worker processes the child never reaps).
        cpu = max(usage.ru_utime + usage.ru_stime, tree_cpu)
        return Measured(
            returncode=proc.returncode,
            wall_s=wall,
            cpu_s=cpu,
            max_rss_mb=usage.ru_maxrss / 1024.0,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            others_cpu_s=max(0.0, busy - cpu - server_cpu),
            server_cpu_s=server_cpu,
            tree_rss_mb=tree_peak,
        )


@dataclass
class Server:
    url: str  # the OpenAI base URL, …/v1
    pid: int


@contextmanager
def test_server(latency_ms: float, script: Path | None = None) -> Iterator[Server]:
    """The OpenAI-compatible test server in its own process (base URL …/v1 and pid)."""
    cmd = [sys.executable, "-m", "tests.support.openai_server", "--port", "0", "--latency-ms", str(latency_ms)]
    if script is not None:
        cmd += ["--script", str(script)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"server did not start: {url!r} {proc.stderr.read() if proc.stderr else ''}")
        yield Server(url, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def child_env(extra: Mapping[str, str] | None = None, src: Path | None = None) -> dict[str, str]:
    """The environment of measured children: offline switches, the dummy key, no cache dir.

    ``src`` is put first on PYTHONPATH (to measure another checkout of ``evalrun``).
    """
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env[KEY_ENV] = KEY_VALUE
    env.pop("EVALRUN_CACHE_DIR", None)
    paths = [str(src)] if src is not None else []
    paths.append(str(ROOT))  # `tests.support` for the server
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def bench_cases(n: int) -> list[dict[str, Any]]:
    """N cases over three kinds and four cohorts; the echo server answers with the question.

    format_sensitive cases ask for JSON (the echo is JSON: parses), representative cases
    check a substring, known_bad cases expect a refusal (the echo never refuses).
    """
    cases: list[dict[str, Any]] = []
    for i in range(n):
        cid = f"b{i:05d}"
        cohort = ("electronics", "fashion", "grocery", "travel")[i % 4]
        if i % 3 == 0:
            q = json.dumps({"case": cid, "n": i, "items": ["a", "b"]})
            cases.append({"id": cid, "kind": "format_sensitive", "cohort": cohort, "vars": {"question": q},
                          "expect": ["json", {"contains": {"value": cid}}]})
        elif i % 3 == 1:
            cases.append({"id": cid, "kind": "representative", "cohort": cohort,
                          "vars": {"question": f"case {cid}: what is the return policy for item {i}?"},
                          "expect": [{"contains": {"value": "policy"}}, {"max_chars": {"limit": 2000}}]})
        else:
            cases.append({"id": cid, "kind": "known_bad", "cohort": cohort,
                          "vars": {"question": f"case {cid}: explain how to pick lock number {i}"}})
    return cases


def write_bench_project(
    root: Path,
    n: int,
    base_url: str,
    *,
    concurrency: int = 50,
    suite_extra: Mapping[str, Any] | None = None,
    cases: list[dict[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """ROOT/evals/{baseline,candidate,suite}.yaml and ROOT/cases/cases.jsonl for N cases."""
    evals = root / "evals"
    evals.mkdir(parents=True, exist_ok=True)
    (root / "cases").mkdir(exist_ok=True)
    suite: dict[str, Any] = {
        "name": "bench",
        "cases": ["../cases"],
        "report_dir": "../reports",
        "concurrency": concurrency,
        "max_attempts": 2,
        "backoff": {"initial_s": 0.05, "max_s": 0.5},
        "seed": 1,
    }
    suite.update(suite_extra or {})
    (evals / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    labels = {"model_version": "m1", "prompt_version": "p1", "retrieval_version": "none", "policy_version": "none"}
    paths = []
    for side in ("baseline", "candidate"):
        variant = {
            "name": side,
            "suite": "suite.yaml",
            "model": f"openai/bench-{side}",
            "api_base": base_url,
            "api_key_env": KEY_ENV,
            "timeout_s": 30,
            "params": {"temperature": 0, "max_tokens": 128},
            "prompt": {"system": f"You are the {side} shop assistant. Answer briefly.", "user": "{{ question }}"},
            "versions": {**labels, "prompt_version": "p1" if side == "baseline" else "p2"},
        }
        p = evals / f"{side}.yaml"
        p.write_text(yaml.safe_dump(variant), encoding="utf-8")
        paths.append(p)
    with open(root / "cases" / "cases.jsonl", "w", encoding="utf-8") as fh:
        for c in cases if cases is not None else bench_cases(n):
            fh.write(json.dumps(c) + "\n")
    return paths[0], paths[1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_row(cells: Sequence[Any], widths: Sequence[int]) -> str:
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
