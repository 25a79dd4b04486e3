"""evalrun: the Stage-1 offline gate for prompt and model changes."""

__version__ = "0.1.0"
