"""The mask-bias sweep's table (tools/bench/benchmarks/mask_bias.py): the cells and counts of docs/benchmarks.md."""

from __future__ import annotations

from tools.bench.benchmarks.mask_bias import Condition, cell_text, markdown_table

SCORABLE = 32  # 72 frames, scored from 40


def _values(condition: Condition, bias: float, missed: int, scored: int, centroid_px: float) -> dict[str, float]:
    key = condition.name
    return {f"{key}.seeded": 1, f"{key}.area_bias": bias, f"{key}.missed": missed, f"{key}.scored": scored,
            f"{key}.centroid_error_px": centroid_px}


def test_cells_say_refused_lost_off_or_the_area_error() -> None:
    c = Condition("sphere", 40.0, 0.5, "mtf")
    assert cell_text(c, {}, SCORABLE) == ("refused", None)
    assert cell_text(c, _values(c, 15.0, 30, 2, 1.0), SCORABLE) == ("lost (30)", None)  # most scored frames maskless
    assert cell_text(c, _values(c, float("nan"), 49, 0, float("nan")), SCORABLE) == ("lost (49)", None)
    assert cell_text(c, _values(c, -48.0, 0, 32, 11.0), SCORABLE) == ("off (-48)", None)  # 11 px > 40 / 4
    assert cell_text(c, _values(c, 4.6, 0, 32, 3.0), SCORABLE) == ("+5", True)
    assert cell_text(c, _values(c, -9.4, 12, 30, 3.0), SCORABLE) == ("-9ᵐ¹²", False)


def test_the_table_counts_tracked_cells_of_20_px_and_more_per_cnr() -> None:
    conditions = [Condition(shape, size, cnr, blur) for shape in ("sphere", "cube") for size in (10.0, 20.0)
                  for cnr in (0.3, 1.0) for blur in ("mtf", "defocus3")]
    cells = {c: ("+1", True) if c.cnr == 1.0 else ("off (-30)", None) if c.blur == "mtf" else ("-7", False)
             for c in conditions}
    table = markdown_table(conditions, cells).splitlines()
    assert table[0] == "| particle | CNR 0.3 mtf | CNR 1 mtf | CNR 0.3 defocus3 | CNR 1 defocus3 |"
    assert table[2] == "| sphere 10 px | off (-30) | +1 | -7 | +1 |"
    assert table[-2].startswith("CNR 0.3: 0/2 cells") and "(4 run)" in table[-2]
    assert table[-1].startswith("CNR 1: 4/4 cells")
