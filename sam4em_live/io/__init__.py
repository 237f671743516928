"""Readers and writers of files: frame stacks and folders, prompts, trajectories, run folders, mask stacks.

Everything that touches a file format lives here, below the pipeline stages that use it, so a source, a sink,
the simulator and the analysis read and write the same files the same way.
"""
