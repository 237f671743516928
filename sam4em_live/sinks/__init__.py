"""Consumers of results: the `Sink` seam, the results publisher, the recorder and the sink registry."""
