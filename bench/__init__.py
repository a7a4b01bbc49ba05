"""Benchmarks: measured against ceilings in the same run (see bench/README.md)."""
