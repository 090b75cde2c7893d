"""Benchmarks on the local stack: `python -m bench.throughput`, `python -m bench.coldstart`."""
