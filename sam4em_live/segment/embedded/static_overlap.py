"""A tracked particle over a static feature: its search window with the feature divided out.

A template match adds up darkness: a particle passing over (or beside) something that never moves -- an
immobile look-alike nobody prompted, contamination, a blob at the edge -- scores higher on a pose that takes
in part of that feature than on itself. The match slides onto the feature a few pixels a frame and, once most
of its contrast is the feature's, the identity gate refuses it as "on a static feature": the particle is
reported 8-13 px off and then absent while it is plainly in view (robustness `leave-field`, seed 0: the rod
came back through the edge and crossed its static twin, 15 frames at J&F 30-55 and 4 missed).

`static_map.StaticMap` holds what never moved at full contrast. Where a particle's placed mask touches one
of its features (`StaticMap.near_feature`, a slice of a boolean map: the per-frame path of a particle in
the open costs nothing more), the particle is searched once more in a copy of the frame whose search window
has the features divided out (`StaticMap.divided_out`): the feature reads as background, the particle keeps
its own contrast where it lies over it, and the identity gate sees the particle, not the feature. The map
never learns a tracked particle (its blocks are withheld), nor a lost particle's last place, so a particle
cannot divide itself out. Only features of the particle's polarity, of at least `MIN_FEATURE_AREA` of its
area and still in view outside the particles' masks are divided (`StaticMap.divided_out`): an unprompted
particle that rested and moved on is no longer there, and a particle now on its place must not be divided
out with it (robustness `distractors`: a sphere lost and then handed to a look-alike 53 px away).

Coordinates: x = column, y = row, pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

#: Only static features of at least this fraction of the particle's area are divided out (`StaticMap.divided_out`).
MIN_FEATURE_AREA = 0.25

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.raster import Placement
    from sam4em_live.segment.embedded.static_map import StaticMap
    from sam4em_live.segment.embedded.tracker import TrackedParticle


def static_divided_window(static: StaticMap, pixels: np.ndarray, track: TrackedParticle, options: EmbeddedOptions,
                          claims: Sequence[Placement]) -> np.ndarray | None:
    """``pixels`` with the static features divided out over ``track``'s whole search (None: none there).

    Whether a feature is still there is not read under the other particles' masks (``claims``) nor under
    ``track``'s own mask where it was last (`StaticMap.divided_out`): a particle now on the place of an
    unprompted one that rested there and left would otherwise be divided out with it (robustness
    `distractors`). Its last pose, not this frame's match, which may already have slid onto the feature.

    The rectangle covers the full-radius search window round the particle's prediction, widened by the
    template's reach (the fine search and the appearance learning read beyond the window's centre cells).
    """
    prior = track.prior(options)
    x0, y0, edge = track.window_origin(prior.x, prior.y)
    reach = 2 * track.memory.half + 2 * track.memory.coarse_factor
    last = track.memory.rasterize(track.x, track.y, track.angle_deg, pixels.shape)
    covers = [*claims, last] if last is not None else list(claims)
    return static.divided_out(pixels, x0 - reach, y0 - reach, x0 + edge + reach, y0 + edge + reach, track.polarity,
                              MIN_FEATURE_AREA * track.memory.area_px, covers)
