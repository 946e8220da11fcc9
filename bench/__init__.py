"""Benchmarks: `make bench` or `python -m bench` (not timed tests)."""
