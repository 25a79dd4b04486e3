"""The litellm provider: the only code that imports litellm (lazily, once per process)."""
