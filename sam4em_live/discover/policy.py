"""Which candidates become proposals (or, in auto mode, particles): the documented policy, and its memory.

A candidate counts when it passes every rule of `DiscoveryPolicy` (size range, contrast, shape, distance from
the particles tracked now or recently, not explained by the static map) and has done so on
``persistence_frames`` detector runs in a row at about the same place (`CandidateTracks`: a candidate joins
the nearest track of its polarity within `LINK_RADIUS_PX` plus its own radius, so a particle that moves
between runs keeps its track). A track that has been proposed keeps its proposal id while it lasts; a rejected one is not
proposed again while it lasts; a track not seen for `FORGET_RUNS` runs is forgotten (its open proposal
expires). A track's score is the mean of its last `SCORE_RUNS` detections' (a faint particle keeps its score
from run to run, a peak of shot noise does not); its recent places feed the service's static screen.

Discovery never gives a candidate an existing particle id: a lost particle found again elsewhere is a
new proposal (or, in auto mode, a new particle), never a silent re-identification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sam4em_live.discover.detector import Candidate

#: How far (px, plus the candidate's radius) a candidate may be from its track's last position.
LINK_RADIUS_PX = 24.0
#: A track's score is the mean of its last this many detections' scores.
SCORE_RUNS = 6
#: Detections over which a track's recent excursion is measured (the static screen's window).
STILL_WINDOW = 16
#: Detector runs a track may go unseen before it is forgotten.
FORGET_RUNS = 3


@dataclass(frozen=True, slots=True)
class DiscoveryPolicy:
    """The rules a candidate must pass (units: full-resolution pixels; contrast as a fraction)."""

    min_diameter_px: float = 5.0
    max_diameter_px: float = 160.0
    min_contrast: float = 0.0
    max_elongation: float = 6.0
    min_distance_px: float = 8.0
    persistence_frames: int = 2

    def refusal(self, candidate: Candidate, occupied: list[tuple[float, float, float]]) -> str | None:
        """Why ``candidate`` does not pass (a short reason), or None. ``occupied``: (x, y, radius) of particles."""
        if not self.min_diameter_px <= candidate.diameter_px <= self.max_diameter_px:
            return "size"
        if candidate.contrast < self.min_contrast:
            return "contrast"
        if candidate.elongation > self.max_elongation:
            return "shape"
        radius = candidate.diameter_px / 2
        for x, y, r in occupied:
            if math.hypot(candidate.x - x, candidate.y - y) < r + radius + self.min_distance_px:
                return "near_particle"
        return None


@dataclass(slots=True, eq=False)
class CandidateTrack:
    """One candidate followed over detector runs (compared by identity: two tracks are never one)."""

    candidate: Candidate
    hits: int = 1  # runs in a row it was seen
    missed: int = 0
    age: int = 1  # runs it was seen in all
    proposal: int | None = None  # its proposal id, once proposed
    rejected: bool = False
    accepted: bool = False
    lost: tuple[int, ...] = ()  # auto mode: lost particles it may be (then proposed, not added)
    before_map: bool = False  # first seen before the static map knew the scene (held until judged)
    recent_scores: list[float] = field(default_factory=list)  # of its last `SCORE_RUNS` detections
    recent_places: list[tuple[float, float]] = field(default_factory=list)  # of its last `STILL_WINDOW` ones

    @property
    def recent_excursion_px(self) -> float:
        """How far it strayed over its last `STILL_WINDOW` detections: the farthest from their mean (px).

        Recent, not since it was first seen: a static feature that a passing particle once merged with
        (its centroid pulled away for a run) is still static once the particle has gone.
        """
        if not self.recent_places:
            return 0.0
        mx = sum(x for x, _ in self.recent_places) / len(self.recent_places)
        my = sum(y for _, y in self.recent_places) / len(self.recent_places)
        return max(math.hypot(x - mx, y - my) for x, y in self.recent_places)

    @property
    def score(self) -> float:
        """Its candidates' mean score over the last `SCORE_RUNS` runs it was seen in (noise sigmas).

        A particle keeps its score from frame to frame while a peak of shot noise does not: averaging the
        scores of a track lets a faint particle pass (low dose) without letting the noise through.
        """
        return sum(self.recent_scores) / len(self.recent_scores) if self.recent_scores else self.candidate.score


@dataclass(slots=True)
class CandidateTracks:
    """Candidates linked across detector runs (one thread at a time)."""

    tracks: list[CandidateTrack] = field(default_factory=list)

    def update(self, candidates: list[Candidate]) -> tuple[list[CandidateTrack], list[CandidateTrack]]:
        """Link this run's passing candidates; returns (tracks seen this run, tracks forgotten this run).

        In the candidates' order each takes the nearest track of its polarity not taken yet (the first of
        equals in track order); the distances are one array (tens of candidates x ~100 tracks a run, mostly
        faint seeds: in Python loops they held the GIL the frame loop needs for ~5 ms a run).
        """
        old = self.tracks
        free = np.ones(len(old), bool)
        distances = _distances(candidates, old)
        seen: list[CandidateTrack] = []
        new: list[CandidateTrack] = []
        for k, candidate in enumerate(candidates):
            best = -1
            if len(old):
                row = np.where(free, distances[k], np.inf)
                best = int(np.argmin(row))
                if not row[best] <= LINK_RADIUS_PX + candidate.diameter_px / 2:
                    best = -1
            if best >= 0:
                free[best] = False
                track = old[best]
                track.candidate, track.hits, track.missed, track.age = candidate, track.hits + 1, 0, track.age + 1
                track.recent_scores = [*track.recent_scores[-(SCORE_RUNS - 1):], candidate.score]
                track.recent_places = [*track.recent_places[-(STILL_WINDOW - 1):], (candidate.x, candidate.y)]
            else:
                track = CandidateTrack(candidate, recent_scores=[candidate.score],
                                       recent_places=[(candidate.x, candidate.y)])
                new.append(track)
            seen.append(track)
        forgotten = []
        for index in np.flatnonzero(free):
            track = old[index]
            track.missed += 1
            track.hits = 0  # persistence counts runs in a row
            if track.missed >= FORGET_RUNS:
                forgotten.append(track)
        gone = {id(t) for t in forgotten}
        self.tracks = [t for t in old if id(t) not in gone] + new
        return seen, forgotten


def _distances(candidates: list[Candidate], tracks: list[CandidateTrack]) -> np.ndarray:
    """(candidates, tracks) distances in px.

    Infinite between a dark and a bright one: never one particle (a dark particle's bright halo is not it).
    """
    if not candidates or not tracks:
        return np.zeros((len(candidates), len(tracks)))
    c = np.array([(k.x, k.y, k.polarity) for k in candidates], dtype=np.float64)
    t = np.array([(k.candidate.x, k.candidate.y, k.candidate.polarity) for k in tracks], dtype=np.float64)
    out = np.hypot(c[:, None, 0] - t[None, :, 0], c[:, None, 1] - t[None, :, 1])
    out[c[:, None, 2] != t[None, :, 2]] = np.inf
    return out
