"""Developer tools that are not part of the product package (the benchmark harness: ``tools.bench``)."""
