"""The API key never lands on disk or in output, even when the provider echoes it back.

A recognisable fake key sits in the variable named by ``api_key_env``. `evalrun compare`
runs as a subprocess (the CLI exactly as a user runs it, cache on as by default) against
127.0.0.1 servers: one that answers normally, one that answers 401 echoing the
Authorization header and the key in its error body, one that answers 500 with the key in
the body, and one that answers 200 with the key echoed into the content, a tool call and
the refusal field (in one process and with two worker processes). For each: the server did receive the key, and the key (or its distinctive tail)
is in no file of the run folder (recursively), not in the project's response cache, not in
stdout or stderr, and not in any error message of results.jsonl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from tests.support.openai_server import OpenAIServer, Reply

from projectkit import LABELS, case, variant, write_project

pytestmark = [pytest.mark.network, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-evalrun-SECRET-1234567890"
FRAGMENTS = (SECRET, "SECRET-1234567890", "evalrun-SECRET")
KEY_ENV = "EVALRUN_SECRETS_E2E_KEY"

Behaviour = Callable[[OpenAIServer], Callable[[dict[str, Any], int], Reply]]


def _normal(server: OpenAIServer) -> Callable[[dict[str, Any], int], Reply]:
    return lambda body, n: Reply(content="a normal answer")


def _echo_401(server: OpenAIServer) -> Callable[[dict[str, Any], int], Reply]:
    def behaviour(body: dict[str, Any], n: int) -> Reply:
        header = server.authorizations[n - 1] or ""
        key = header.removeprefix("Bearer ")
        return Reply(
            status=401,
            error_message=(f"Incorrect API key provided: {key}. You sent Authorization: {header}; "
                           f"headers={{'Authorization': '{header}', 'api-key': '{key}'}} key={key}"),
            error_type="invalid_request_error",
            error_code="invalid_api_key",
            headers={"X-Echo-Authorization": header},
        )

    return behaviour


def _echo_500(server: OpenAIServer) -> Callable[[dict[str, Any], int], Reply]:
    def behaviour(body: dict[str, Any], n: int) -> Reply:
        key = (server.authorizations[n - 1] or "").removeprefix("Bearer ")
        return Reply(status=500, error_message=f"upstream crashed while using key {key} (raw: {key[:20]}{key[20:]})")

    return behaviour


def _echo_200(server: OpenAIServer) -> Callable[[dict[str, Any], int], Reply]:
    """A "successful" answer that echoes the Authorization header into the content, a tool
    call's arguments and the refusal field (a misbehaving proxy or a prompt-injected model)."""

    def behaviour(body: dict[str, Any], n: int) -> Reply:
        header = server.authorizations[n - 1] or ""
        key = header.removeprefix("Bearer ")
        return Reply(content=f"I was called with {header}; the key is {key}.",
                     tool_calls=[{"name": "leak", "arguments": json.dumps({"key": key}), "id": f"call_{key[-6:]}"}],
                     refusal=f"no ({key})")

    return behaviour


SCENARIOS: dict[str, tuple[Behaviour, set[int], list[str]]] = {
    "normal": (_normal, {0, 3}, []),
    "401-echoes-key": (_echo_401, {4}, []),
    "500-echoes-key": (_echo_500, {4}, []),
    "200-echoes-key-in-content": (_echo_200, {0, 3}, []),
    "200-echoes-key-in-content-2-workers": (_echo_200, {0, 3}, ["--workers", "2"]),
}


def _project(root: Path, base_url: str) -> tuple[Path, Path]:
    common: dict[str, Any] = {"api_base": base_url, "api_key_env": KEY_ENV, "timeout_s": 5}
    return write_project(
        root,
        cases=[case(f"s{i}") for i in range(3)],
        baseline=variant("baseline", model="openai/secret-base", versions={**LABELS, "model_version": "secret-base"},
                         **common),
        candidate=variant("candidate", model="openai/secret-cand", versions={**LABELS, "model_version": "secret-cand"},
                          **common),
        suite={"max_attempts": 2, "backoff": {"initial_s": 0.01, "max_s": 0.05},
               "gate": {"rules": {"latency_p50_ratio": {"enabled": False}, "latency_p95_ratio": {"enabled": False}}}},
    )


def _leaks(data: bytes) -> list[str]:
    return [f for f in FRAGMENTS if f.encode() in data]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """All scenarios, their CLI subprocesses running at the same time."""
    root = tmp_path_factory.mktemp("secrets")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVALRUN_")}
    env[KEY_ENV] = SECRET
    out: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        procs = {}
        for name, (behaviour, _, extra) in SCENARIOS.items():
            server = stack.enter_context(OpenAIServer())
            server.behaviour = behaviour(server)
            b, c = _project(root / name, server.base_url)
            run_dir = root / name / "run"
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--out", str(run_dir), *extra],
                cwd=root / name, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            out[name] = {"server": server, "project": root / name, "run": run_dir}
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=180)
            out[name].update(rc=proc.returncode, stdout=stdout, stderr=stderr,
                             authorizations=out[name]["server"].authorizations)
    yield out


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_key_is_sent_but_never_stored_or_shown(runs: dict[str, dict[str, Any]], scenario: str) -> None:
    r = runs[scenario]
    assert r["rc"] in SCENARIOS[scenario][1], r["stderr"].decode(errors="replace")[-2000:]
    assert b"Traceback" not in r["stdout"] + r["stderr"]
    # The server did receive the key, on every request.
    assert r["authorizations"] and set(r["authorizations"]) == {f"Bearer {SECRET}"}
    assert not _leaks(r["stdout"]), "key on stdout"
    assert not _leaks(r["stderr"]), "key on stderr"
    files = _files(r["run"])
    names = {f.name for f in files}
    assert names & {"journal.jsonl", "journal.w0.jsonl"}  # one process, or worker journals
    if scenario.startswith("401"):
        # A rejected key stops the run at the first call (the preflight): its message, masked,
        # is on stderr; nothing else was called or scored.
        assert "manifest.json" in names and "summary.json" not in names
        assert b"preflight: the first" in r["stderr"] and b"Incorrect API key provided: ***" in r["stderr"]
        assert len(r["authorizations"]) == 1
        rows = [json.loads(line) for line in (r["run"] / "journal.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [row["error_kind"] for row in rows] == ["auth"] and "***" in rows[0]["error_message"]
    else:
        assert {"manifest.json", "results.jsonl", "summary.json", "report.html"} <= names
    for f in files:
        assert not _leaks(f.read_bytes()), f"key in {f.relative_to(r['project'])}"
    cache = r["project"] / ".evalrun-cache"
    for f in _files(cache) if cache.exists() else []:
        assert not _leaks(f.read_bytes()), f"key in the cache file {f.name}"
    # Nothing else the run wrote into the project either (reports, notes, temp files).
    for f in _files(r["project"]):
        assert not _leaks(f.read_bytes()), f"key in {f.relative_to(r['project'])}"
    if scenario.startswith("401"):
        return
    rows = [json.loads(line) for line in (r["run"] / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6
    if scenario == "normal":
        assert all(row["error_kind"] is None for row in rows)
    elif scenario.startswith("200"):
        # The echo is kept where it was, masked: the output still says what the model said.
        for row in rows:
            assert row["error_kind"] is None
            assert row["output"] == "I was called with Bearer ***; the key is ***."
            assert row["tool_calls"][0]["arguments"] == '{"key": "***"}' and row["refusal"] == "no (***)"
    else:
        assert all(row["error_kind"] == "server_error" for row in rows)
        for row in rows:
            message = row["error_message"] or ""
            assert message and not _leaks(message.encode())
            assert "***" in message  # masked where it was, not silently dropped


def test_error_messages_in_the_report_are_masked(runs: dict[str, dict[str, Any]]) -> None:
    """The 500 body's echo is visible (useful to the user) but masked, in the report and in
    the terminal's error digest."""
    r = runs["500-echoes-key"]
    html = (r["run"] / "report.html").read_text(encoding="utf-8")
    assert "upstream crashed while using key" in html and "***" in html
    assert not _leaks(html.encode())
    assert b"failed calls by kind" in r["stderr"] and b"upstream crashed while using key ***" in r["stderr"]
