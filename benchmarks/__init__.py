"""Ensemble benchmarks: `python -m benchmarks [--quick] [--write-readme]`."""
