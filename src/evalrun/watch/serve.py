"""`evalrun watch --serve`: the verdict over HTTP for Argo Rollouts and Flagger.

* ``GET /verdict/<stage>`` — verdict.json (HTTP 200 whatever the verdict): an Argo Rollouts
  Web metric reads ``{$.verdict}`` with ``successCondition: result == "continue"`` and
  ``failureCondition: result == "rollback"``; hold and no_data fall through to
  Inconclusive, which pauses the rollout for a human.
* ``GET|POST /gate/<stage>`` — HTTP 200 only when the verdict is continue, else 409: a
  Flagger ``confirm-promotion`` (or ``confirm-traffic-increase``) webhook.
* ``GET|POST /rollback/<stage>`` — HTTP 200 only when the verdict is rollback, else 409: a
  Flagger ``rollback`` webhook.
* ``GET /healthz`` — 200.

Each verdict is recomputed from the logs at most once per ``refresh_s`` per stage and
written to the output folder as by `evalrun watch`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from evalrun.errors import EvalrunError

log = logging.getLogger(__name__)

Compute = Callable[[str], dict[str, Any]]
"""Stage name → verdict.json content (raises EvalrunError when it cannot)."""


@dataclass
class VerdictCache:
    """Recompute a stage's verdict at most once per ``refresh_s`` (thread-safe)."""

    compute: Compute
    refresh_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _entries: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)

    def get(self, stage: str) -> dict[str, Any]:
        """The stage's current verdict.json content."""
        with self._lock:
            hit = self._entries.get(stage)
            if hit is not None and self.clock() - hit[0] < self.refresh_s:
                return hit[1]
            value = self.compute(stage)
            self._entries[stage] = (self.clock(), value)
            return value


def _handler(cache: VerdictCache, stages: set[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "evalrun-watch"

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = (json.dumps(body, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> None:
            parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/") if p]
            if parts == ["healthz"]:
                self._send(200, {"ok": True})
                return
            if len(parts) != 2 or parts[0] not in ("verdict", "gate", "rollback"):
                self._send(404, {"error": "use /verdict/<stage>, /gate/<stage> or /rollback/<stage>"})
                return
            kind, stage = parts
            if stage not in stages:
                self._send(404, {"error": f"unknown stage (stages: {', '.join(sorted(stages))})"})
                return
            try:
                verdict = cache.get(stage)
            except EvalrunError as exc:
                self._send(503, {"verdict": "error", "error": str(exc)})
                return
            if kind == "verdict":
                self._send(200, verdict)
            elif kind == "gate":
                self._send(200 if verdict["verdict"] == "continue" else 409, _short(verdict))
            else:
                self._send(200 if verdict["verdict"] == "rollback" else 409, _short(verdict))

        def do_GET(self) -> None:
            self._route()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 20))  # Flagger posts a JSON payload; not needed
            self._route()

    return Handler


def _short(verdict: dict[str, Any]) -> dict[str, Any]:
    return {k: verdict.get(k) for k in ("stage", "verdict", "exit_code", "reasons", "at", "owner")}


def make_server(host: str, port: int, cache: VerdictCache, stages: set[str]) -> ThreadingHTTPServer:
    """An HTTP server answering verdicts (``serve_forever`` to run it)."""
    server = ThreadingHTTPServer((host, port), _handler(cache, stages))
    server.daemon_threads = True
    return server


def plan_compute(plan_path: Path, out_dir: Path | None) -> Compute:
    """Compute (and write the outputs of) a stage's verdict at the current time."""
    from evalrun.watch.run import default_out_dir, evaluate, write_outputs

    def compute(stage: str) -> dict[str, Any]:
        outcome = evaluate(plan_path, stage)
        write_outputs(outcome, out_dir / stage if out_dir else default_out_dir(plan_path, stage))
        return outcome.summary

    return compute
