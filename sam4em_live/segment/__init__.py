"""Segmenters: the `Segmenter` seam, its backends (threshold, embedded, sam2), the registry and the in-process and child-process stages."""
