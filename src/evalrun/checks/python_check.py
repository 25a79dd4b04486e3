"""The ``python`` check: a user function decides.

``function`` is ``"package.module:func"`` (``func`` may be dotted, e.g. ``Class.method``) or
``"package.module.func"``. It is imported when the case loads, so a typo fails before any
model call. It is called as ``func(output, call, **args)`` and may return a bool, a
``(bool, detail)`` pair or a ``CheckOutcome``. An exception inside it fails the check
for that call; it does not stop the run.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from pydantic import Field

from evalrun.checks.registry import (
    BuildContext,
    CheckFn,
    CheckInput,
    CheckParams,
    parse_params,
    register_check,
    user_error,
)
from evalrun.records import CheckOutcome


class _PythonParams(CheckParams):
    function: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)


def resolve_function(spec: str) -> Callable[..., Any]:
    """Import ``spec`` and return the callable it names; raises ``ValueError`` with why."""
    if ":" in spec:
        module_name, _, attr_path = spec.partition(":")
    else:
        module_name, _, attr_path = spec.rpartition(".")
    if not module_name or not attr_path:
        raise ValueError(f"{spec!r} is not 'package.module:function' or 'package.module.function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # the module itself crashed while importing
        raise ValueError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr_path!r}") from None
    if not callable(obj):
        raise ValueError(f"{spec!r} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _to_outcome(result: Any) -> CheckOutcome:
    if isinstance(result, CheckOutcome):
        return result
    if isinstance(result, bool):
        return CheckOutcome("python", result, "" if result else "function returned False")
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool):
        return CheckOutcome("python", result[0], str(result[1]))
    return CheckOutcome(
        "python",
        False,
        f"function returned {type(result).__name__}; expected bool, (bool, detail) or CheckOutcome",
    )


@register_check("python")
def _python_factory(params: dict[str, Any], ctx: BuildContext) -> CheckFn:
    p = parse_params(_PythonParams, params, "python", ctx)
    try:
        func = resolve_function(p.function)
    except ValueError as exc:
        raise user_error(ctx, f"check 'python': {exc}") from None
    try:
        inspect.signature(func).bind(None, None, **p.args)
    except TypeError as exc:
        raise user_error(
            ctx, f"check 'python': {p.function} cannot be called as f(output, call, **args): {exc}"
        ) from None
    except ValueError:  # no introspectable signature (some builtins): find out at call time
        pass
    args = p.args

    def check(inp: CheckInput) -> CheckOutcome:
        try:
            result = func(inp.call.output, inp.call, **args)
        except Exception as exc:
            return CheckOutcome("python", False, f"{type(exc).__name__}: {exc}")
        return _to_outcome(result)

    return check
