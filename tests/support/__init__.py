"""Test support code shared by the test suite and the benchmarks (not shipped with evalrun)."""
