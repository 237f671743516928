"""The benchmark harness: named benchmarks, one result schema, stored baselines, side-by-side compares.

Run it as ``python -m tools.bench`` from the repository root (``--help`` lists the commands;
docs/benchmarks.md describes each benchmark and the figures it gave). Nothing here is imported by
``sam4em_live``: the product package does not depend on its benchmarks.

Modules: `schema` (the result record and its JSON), `provenance` (code revision, machine facts),
`registry` (the `Benchmark` record and the list of them), `data` (simulated clips cached on disk),
`child` (runs one benchmark in this process), `runner` (runs benchmarks in child processes, for the
working tree or for a git revision), `compare` (ratio tables), `benchmarks/` (one module per area).

This package imports ``sam4em_live`` only inside functions: a child process measuring an older revision
puts that revision's package first on ``sys.path`` before anything imports it.
"""
