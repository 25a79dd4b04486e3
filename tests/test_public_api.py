"""The import paths users rely on keep working, and importing evalrun stays cheap."""

from __future__ import annotations

import subprocess
import sys

import evalrun


def test_public_names() -> None:
    from evalrun import ExitCode, api, testing
    from evalrun.checks import register_check
    from evalrun.providers.registry import ProviderSpec, register_provider

    assert evalrun.__all__ == sorted(evalrun.__all__)
    assert int(ExitCode.REGRESSION) == 1 and int(ExitCode.COULD_NOT_MEASURE) == 4
    assert callable(api.load_project) and callable(api.compare) and callable(api.compare_sequential)
    assert callable(api.merge) and callable(api.rescore) and callable(api.note) and api.RunOptions
    assert callable(testing.FakeProvider) and callable(testing.serving)
    assert callable(register_check) and callable(register_provider) and ProviderSpec


def test_importing_the_api_imports_no_heavy_library() -> None:
    """`evalrun validate` and --help must not pay for litellm, pandas or jinja2's report."""
    code = ("import sys, evalrun.api, evalrun.cli; "
            "print(sorted(m for m in ('litellm', 'pandas', 'openai', 'llama_cpp', 'ibis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
