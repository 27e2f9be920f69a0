"""Benchmarks and evaluations run by `make bench` and `make eval`; each writes JSON under bench-results/."""
