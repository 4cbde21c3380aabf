"""prngd's benchmark suite: `python3 -m benchmarks` from the repository root (see benchmarks/suite.py)."""
