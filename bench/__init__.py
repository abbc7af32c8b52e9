"""localsb benchmarks: timings next to baselines measured in the same run (see bench/README.md).

Timing goals live here, never in tests.
"""
