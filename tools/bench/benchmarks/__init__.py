"""The benchmarks, one module per area; each registers itself with `tools.bench.registry.benchmark`."""
