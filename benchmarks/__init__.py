"""Benchmark scripts: each a list of cases plus a report over equiforce's own API.

Run from the repository root as modules (``python -m benchmarks.<script> --help``); every
script takes ``--out``, those that read data ``--data-dir`` (default ``../shared/data``
beside the checkout; the speed scripts generate their systems), and each has a smoke test in
``tests/benchmarks`` (tiny sizes, seconds). Figures in ``docs/`` name the command that
produced them.
"""
