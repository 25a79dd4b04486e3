"""Start-up: `evalrun --help` and `evalrun validate` wall time (median), and what they import.

    python benchmarks/bench_startup.py --runs 20

Uses ``hyperfine`` when installed (``apt-get install -y hyperfine``), otherwise a loop of
subprocess runs; prints the median, and the user+sys CPU median (less sensitive to other
load on the machine; with hyperfine it is the mean). ``--importtime`` also lists the ten slowest top-level imports of
``validate`` (``python -X importtime``) and says whether litellm, pandas or numpy were loaded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, fmt_row, median, run_measured

COMMANDS = {
    "evalrun --help": ["--help"],
    "evalrun validate (example)": ["validate", "evals/baseline.yaml", "evals/candidate.yaml"],
}


def _evalrun() -> list[str]:
    """The console script next to this interpreter (not a pyenv shim, which adds a shell)."""
    beside = Path(sys.executable).parent / "evalrun"
    if beside.exists():
        return [str(beside)]
    exe = shutil.which("evalrun")
    return [exe] if exe else [sys.executable, "-m", "evalrun"]


def _with_hyperfine(runs: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "hf.json"
        cmds = [" ".join([*_evalrun(), *args]) for args in COMMANDS.values()]
        subprocess.run(["hyperfine", "-N", "-w", "3", "-r", str(runs), "--export-json", str(export), *cmds],
                       cwd=ROOT, check=True, capture_output=True)
        data = json.loads(export.read_text())
        for name, result in zip(COMMANDS, data["results"], strict=True):
            # hyperfine reports CPU as means only
            out[name] = (float(result["median"]), float(result.get("user", 0.0)) + float(result.get("system", 0.0)))
    return out


def _with_loop(runs: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for name, args in COMMANDS.items():
        walls, cpus = [], []
        for i in range(runs + 3):
            m = run_measured([*_evalrun(), *args], cwd=ROOT, timeout_s=60)
            if m.returncode != 0:
                raise SystemExit(f"{name} failed: {m.stderr[-2000:]}")
            if i >= 3:  # warm-up runs
                walls.append(m.wall_s)
                cpus.append(m.cpu_s)
        out[name] = (median(walls), median(cpus))
    return out


def _importtime() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "evalrun", *COMMANDS["evalrun validate (example)"]],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        raw_name = parts[2]
        depth = (len(raw_name) - len(raw_name.lstrip(" ")) - 1) // 2
        rows.append((int(parts[1]), raw_name.strip(), depth))
    loaded = {n for _, n, _ in rows}
    flags = ", ".join(f"{m}: {'yes' if m in loaded else 'no'}" for m in ("litellm", "pandas", "numpy"))
    print(f"\nvalidate imports {flags}")
    print("slowest imports directly under evalrun.* (cumulative ms):")
    for cum, name, depth in sorted((r for r in rows if r[2] <= 2), reverse=True)[:10]:
        print(f"  {cum / 1000:7.1f}  {'  ' * depth}{name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-hyperfine", action="store_true")
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args(argv)
    use_hf = shutil.which("hyperfine") is not None and not args.no_hyperfine
    results = _with_hyperfine(args.runs) if use_hf else _with_loop(args.runs)
    print(f"start-up, median of {args.runs} runs ({'hyperfine' if use_hf else 'subprocess loop'}); "
          f"load average {Path('/proc/loadavg').read_text().split()[0] if Path('/proc/loadavg').exists() else '?'}")
    widths = (30, 10, 12)
    print(fmt_row(("command", "wall s", "CPU s"), widths))
    for name, (wall, cpu) in results.items():
        print(fmt_row((name, f"{wall:.3f}", f"{cpu:.3f}"), widths))
    if args.importtime:
        _importtime()
    return 0


if __name__ == "__main__":
    sys.exit(main())
