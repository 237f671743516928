"""Whether a run is long enough for the statistics asked of it: `analyze` refuses, naming what each needs.

Needs are counted in frames a track must span (first to last frame, both included; gaps allowed as
long as the pairs exist):

- the tMSD fit (D and alpha, with the localisation offset) needs `MIN_FIT_LAGS` measured lags. By default
  a track's tMSD goes to a quarter of its span (`sam4em_live.stats.msd.default_max_lag`), so that is a
  track of ``4 * MIN_FIT_LAGS + 1`` frames; with ``--max-lag M`` (M >= `MIN_FIT_LAGS`) one of
  ``MIN_FIT_LAGS + 1`` frames;
- a displacement distribution at lag L needs 2 displacements: L + 2 frames;
- the velocity autocorrelation needs two successive velocities: 3 frames.

Each is checked on the data (a gap can leave a long track without a lag), and the refusal lists every
statistic that cannot be computed with the frames it needs, so one re-run with the right options works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from sam4em_live.stats.msd import TrackMsd
    from sam4em_live.stats.velocity import VelocityAutocorrelation

#: Lags the anomalous fit with an offset needs (`sam4em_live.stats.fit.fit_msd`).
MIN_FIT_LAGS = 4


class RunTooShort(ValueError):
    """The run (its longest track) is too short for a statistic asked for; the message says what each needs."""


@dataclass(frozen=True, slots=True)
class StatisticNeed:
    """One statistic, the frames a track must span for it, whether the data has it, and how to ask for less."""

    statistic: str
    frames: int
    met: bool
    hint: str = ""

    def describe(self) -> str:
        return f"{self.statistic} needs a track of {self.frames} frames" + (f" ({self.hint})" if self.hint else "")


def longest_span(tracks: Sequence[tuple[np.ndarray, np.ndarray]]) -> int:
    """Frames the longest track spans (first to last, both included); 0 without tracks."""
    return max((int(f.max() - f.min()) + 1 for f, _ in tracks if f.size), default=0)


def fit_need(ensemble: TrackMsd, max_lag: int | None) -> StatisticNeed:
    """The tMSD fit: `MIN_FIT_LAGS` measured lags of the ensemble tMSD (``max_lag``: the user's --max-lag)."""
    measured = int(ensemble.measured().lag_frames.size)
    if max_lag is not None and max_lag < MIN_FIT_LAGS:
        return StatisticNeed(f"the tMSD fit (D, alpha) over {MIN_FIT_LAGS} lags", MIN_FIT_LAGS + 1, False,
                             f"--max-lag {max_lag} is below {MIN_FIT_LAGS}")
    frames = MIN_FIT_LAGS + 1 if max_lag is not None else 4 * MIN_FIT_LAGS + 1
    hint = "" if max_lag is not None else f"the default --max-lag is a quarter of a track; --max-lag {MIN_FIT_LAGS} " \
                                          f"needs {MIN_FIT_LAGS + 1} frames"
    return StatisticNeed(f"the tMSD fit (D, alpha) over {MIN_FIT_LAGS} lags", frames,
                         measured >= MIN_FIT_LAGS, hint)


def displacement_need(lag: int, count: int) -> StatisticNeed:
    """A displacement distribution at ``lag`` frames, of ``count`` displacements."""
    return StatisticNeed(f"the displacement distribution at lag {lag}", lag + 2, count >= 2, "choose --pdf-lags")


def velocity_need(velocity: VelocityAutocorrelation) -> StatisticNeed:
    """C_v: pairs of velocities one frame apart."""
    return StatisticNeed("the velocity autocorrelation", 3, bool(velocity.n.size > 1 and velocity.n[1] > 0))


def check_run_length(needs: Sequence[StatisticNeed], span: int, source: str) -> None:
    """Raise `RunTooShort` listing every need that is not met."""
    unmet = [need for need in needs if not need.met]
    if unmet:
        raise RunTooShort(f"{source}: too short for the statistics asked: the longest track spans {span} "
                          f"frame{'s' if span != 1 else ''}; " + "; ".join(need.describe() for need in unmet))
