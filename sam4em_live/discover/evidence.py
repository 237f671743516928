"""Evidence carried from one detector run to the next: a faint moving particle adds up, a noise peak does not.

Why: a 15–20 px particle at a per-pixel CNR of 0.5 scores about 4 noise sigmas on one frame, where the
noise's own peaks reach 3.5–4 (the simulator's noise is correlated by the detector MTF); single frames
found 60 % of them. Averaging frames blurs a particle that moves 1–3 px a frame (real MoNet paths, with
jumps of 5–7 px), so the evidence is carried along where the particle may have gone instead — track before
detect: each cell's evidence is its matched-filter response now plus `CarriedEvidence.decay` times the
largest evidence within ``reach_px`` of it at the last run (a particle keeps what it had wherever it moved
within that reach; noise, whose peaks land elsewhere each run, gains much less). The carried part is capped
(``cap`` sigmas) so that a strong particle leaves no wake of high evidence where it was; strong particles
need no help. The sum is put back in noise sigmas (median and robust sigma of the map), so thresholds
keep their meaning.

Units: cells of the detector's block mean; ``reach_px`` in full-resolution pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sam4em_live.discover.flat_field import robust_sigma
from sam4em_live.segment.embedded.window import float32_median

#: The evidence map's noise is measured after detrending at this scale (cells): wider than any particle.
DETREND_CELLS = 12.0


@dataclass(slots=True)
class CarriedEvidence:
    """Per polarity, the last run's evidence map (noise sigmas); one stream, one thread at a time.

    ``decay``: the share of the last run's evidence carried (0: none; each run stands alone);
    ``reach_px``: how far a particle may move between two runs and keep its evidence;
    ``cap``: the most evidence (sigmas) carried from one run to the next.
    """

    decay: float
    reach_px: float
    cap: float
    _maps: dict[int, np.ndarray] = field(default_factory=dict)

    def update(self, darkness: np.ndarray, polarity: int, factor: int) -> np.ndarray:
        """The evidence of this run (noise sigmas), from its matched-filter map ``darkness`` (sigmas, by polarity).

        A new frame size starts afresh.
        """
        if self.decay <= 0:
            return darkness
        previous = self._maps.get(polarity)
        if previous is None or previous.shape != darkness.shape:
            total = darkness.astype(np.float32)
        else:
            reach = max(round(self.reach_px / factor), 0)
            carried = ndimage.maximum_filter(np.minimum(previous, np.float32(self.cap)), size=2 * reach + 1,
                                             mode="nearest")
            carried *= np.float32(self.decay)
            total = darkness + carried
        middle = float32_median(total[::2, ::2].ravel())
        noise = robust_sigma(total, DETREND_CELLS)
        if not noise > 0:
            return darkness
        evidence = (total - np.float32(middle)) / np.float32(noise)
        self._maps[polarity] = evidence
        return evidence
