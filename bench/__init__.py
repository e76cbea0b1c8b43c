"""Benchmarks of the decision service against baselines measured in the same run
(``make bench``; results in docs/benchmarks.md)."""
