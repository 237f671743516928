"""Segmentation and tracking accuracy against ground truth.

`masks` holds the DAVIS region (J) and boundary (F) measures for single masks;
`metrics` evaluates whole label videos (`evaluate_run` → `EvaluationReport`);
`rundir` loads a recorded run and a simulated ground-truth folder and aligns them.
"""
