"""Identity integrity at the frame's edge and among look-alikes (issue 16, "lost beats wrong").

Short clips of the robustness conditions (`sam4em_live.sim.conditions`), tracked by the embedded backend
as the benchmark runs it (`tools/bench/benchmarks/robustness.py`), scored for identity hops and false
presence (`sam4em_live.evaluate.identity`). Before `vetting` judged matches cut by the edge, the rod of
`leave-field` was handed, one ordinary step at a time, to the static dark blob cut by the left edge at its
exit point and reported there with score ~1 on every frame it was out of the field.
"""

from __future__ import annotations

from tools.bench.benchmarks.robustness import run_cell


def test_a_particle_leaving_the_field_is_not_handed_to_a_static_blob_at_its_exit_point() -> None:
    figures = run_cell("leave-field", "sim", [0], 100, "embedded", {}, "point", 0.5).figures
    assert figures["absent_frames"] > 0, figures
    assert figures["false_presence_frames"] == 0, figures  # was every absent frame, on the blob
    assert figures["hops"] == 0, figures
    assert figures["missed_frames"] <= 8, figures  # lost beats wrong: a few frames beside the static twin
