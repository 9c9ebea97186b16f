"""Benchmarks: `python -m benchmarks AREA|all` writes benchmarks/results/<area>.json."""
