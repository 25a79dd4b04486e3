"""evalrun: the Stage-1 offline gate for prompt and model changes.

The library's entry points are ``evalrun.api`` (load, run, compare, gate, report),
``evalrun.testing`` (a scriptable provider), ``evalrun.checks.register_check`` and
``evalrun.providers.registry`` for plugins, and the exit codes below.
"""

from evalrun.errors import CouldNotMeasureError, EvalrunError, ExitCode, UserInputError

__version__ = "0.1.0"

__all__ = ["CouldNotMeasureError", "EvalrunError", "ExitCode", "UserInputError", "__version__"]
