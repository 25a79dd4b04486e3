"""The default worker count: one process unless many calls go through litellm.acompletion.

A run on the direct path (OpenAI-compatible endpoint, see ``providers/litellm/direct.py``)
costs ~0.5 ms of client CPU per call: one process serves it, and a second one would only
pay start-up. Calls through ``litellm.acompletion`` cost ~4 ms each: past ~1,000 of them a
worker per 1,000 calls (up to the cores, at most 4) pays for its start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from evalrun import api
from evalrun.execution import pool
from evalrun.execution.executor import InProcessExecutor, PoolExecutor
from evalrun.execution.run import make_executor
from evalrun.execution.workers import auto_workers, litellm_sides
from evalrun.providers.litellm import direct
from projectkit import case, variant, write_project

KEY_ENV = "EVALRUN_WORKERS_TEST_KEY"


@pytest.mark.parametrize(
    ("calls", "share", "cores", "expected"),
    [
        (20_000, 0.0, 2, 1),  # all direct: never more than this process
        (20_000, 0.0, 16, 1),
        (128, 1.0, 2, 1),  # a small litellm suite: start-up dominates
        (999, 1.0, 8, 1),
        (1_000, 1.0, 2, 2),
        (2_000, 0.5, 2, 2),  # half the calls through litellm: 1,000 slow calls
        (2_000, 1.0, 2, 2),  # never more than the cores
        (20_000, 1.0, 1, 1),  # one core: nothing to gain
        (2_000, 1.0, 8, 3),
        (20_000, 1.0, 32, 4),  # at most 4 (each holds its own litellm)
    ],
)
def test_auto_workers(calls: int, share: float, cores: int, expected: int) -> None:
    assert auto_workers(calls, share, cores) == expected


class _FakePool:
    """Stands in for WorkerPool: records how it was asked for, starts nothing."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, workers: int, factory: Any, *, preload: tuple[str, ...]) -> None:
        self.workers = workers
        _FakePool.made.append({"workers": workers, "preload": tuple(preload)})

    def close(self) -> None:
        pass


def _project(tmp_path: Path, n: int, model: str = "openai/unpriced-bench", **suite: Any) -> Any:
    side = {"model": model, "api_base": "http://127.0.0.1:9/v1", "api_key_env": KEY_ENV,
            "params": {"temperature": 0, "max_tokens": 16}}
    b, c = write_project(tmp_path, cases=[case(f"c{i:04d}") for i in range(n)],
                         baseline=variant("baseline", **side), candidate=variant("candidate", **side), suite=suite)
    return api.load_project(b, c)


@pytest.fixture
def fake_pool(monkeypatch: pytest.MonkeyPatch) -> type[_FakePool]:
    monkeypatch.setenv(KEY_ENV, "sk-test-workers")
    monkeypatch.setattr(pool, "WorkerPool", _FakePool)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    for name in (direct.TRANSPORT_ENV, *direct._PROXY_ENV):
        monkeypatch.delenv(name, raising=False)
    _FakePool.made = []
    return _FakePool


def test_a_large_suite_on_the_direct_path_runs_in_this_process(tmp_path: Path, fake_pool: type[_FakePool]) -> None:
    project = _project(tmp_path, 3_000)
    assert litellm_sides(project) == 0
    assert isinstance(make_executor(project, api.RunOptions()), InProcessExecutor)
    assert fake_pool.made == []


def test_a_large_suite_through_litellm_gets_a_worker_per_core(
    tmp_path: Path, fake_pool: type[_FakePool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(direct.TRANSPORT_ENV, "litellm")
    project = _project(tmp_path, 600)  # 1,200 calls through litellm
    assert litellm_sides(project) == 2
    executor = make_executor(project, api.RunOptions())
    assert isinstance(executor, PoolExecutor)
    assert fake_pool.made == [{"workers": 2, "preload": pool.DEFAULT_PRELOAD}]  # the forkserver imports litellm


def test_a_small_suite_through_litellm_stays_in_this_process(
    tmp_path: Path, fake_pool: type[_FakePool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(direct.TRANSPORT_ENV, "litellm")
    assert isinstance(make_executor(_project(tmp_path, 100), api.RunOptions()), InProcessExecutor)


def test_explicit_workers_win_and_direct_workers_skip_the_litellm_import(
    tmp_path: Path, fake_pool: type[_FakePool]
) -> None:
    project = _project(tmp_path, 50, workers=3)
    assert isinstance(make_executor(project, api.RunOptions()), PoolExecutor)
    assert isinstance(make_executor(project, api.RunOptions(workers=2)), PoolExecutor)
    assert isinstance(make_executor(project, api.RunOptions(workers=1)), InProcessExecutor)
    assert fake_pool.made == [{"workers": 3, "preload": pool.DIRECT_PRELOAD},
                              {"workers": 2, "preload": pool.DIRECT_PRELOAD}]
    assert not any("litellm.importer" in name for name in pool.DIRECT_PRELOAD)


def test_a_priced_model_goes_through_litellm(tmp_path: Path, fake_pool: type[_FakePool]) -> None:
    """litellm prices it (cost per call), so its calls are litellm's: 1,200 of them get 2 workers."""
    project = _project(tmp_path, 600, model="openai/gpt-4o-mini")
    assert litellm_sides(project) == 2
    assert isinstance(make_executor(project, api.RunOptions()), PoolExecutor)
