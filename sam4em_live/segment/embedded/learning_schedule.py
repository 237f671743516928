"""When a tracked particle learns its appearance, and when a filling memory may refresh its shape (issue 23).

Learning and the shape refreshes it triggers are the costliest periodic work of the embedded backend
(2-8 ms a refresh at 1024²). Each particle learns on its own phase, and memories filling together take
turns, so that work is spread over frames instead of landing on one: a flat per-frame cost, not the
spikes that drop frames of a fast camera. `EmbeddedSegmenter` asks these two questions every frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.tracker import TrackedParticle

#: While the pipeline is behind, a particle's due appearance update is skipped at most this many times in a row
#: (a filling memory's once more where that would end on an even frame, `learning_due`).
MAX_DEFERRED_LEARNING = 3
#: While several memories fill together, their shape refreshes are made only on frames ``k *
#: FILLING_REFRESH_SPACING_FRAMES + 1``, one a frame for every `FILLING_MEMORIES_PER_REFRESH` filling
#: memories (or fewer), the most overdue first (issue 23, a click at 200 fps): 4 particles prompted together
#: each refreshed every 2nd frame while young (2-8 ms a refresh at 1024²): ~13 ms frames for their first
#: ~15 frames, and frames dropped. Those are odd frames: the background and static maps update on even ones.
#: Many particles prompted together get proportionally more turns (each memory is refreshed about as often
#: as 4 are). One or two filling memories (a click or two mid-stream) refresh when due.
FILLING_REFRESH_SPACING_FRAMES = 2
FILLING_MEMORIES_PER_REFRESH = 4
#: Up to this many filling memories refresh whenever due: each particle's own phase already spreads their
#: refreshes (at most two a frame), and the turns above cost two-particle clips 0.3-1.1 J&F in every condition
#: of the robustness matrix (the measurement is in the git history of docs/benchmarks.md).
FILLING_MEMORIES_ON_OWN_PHASES = 2


def learning_due(track: TrackedParticle, frames_seen: int, options: EmbeddedOptions, behind: bool) -> bool:
    """Learn every frame while the memory fills, then every ``appearance_update_interval_frames``.

    Each particle learns on its own phase of the interval (offset by its id), so the
    learning (and the shape refreshes it triggers) of several particles is spread
    over frames instead of landing on the same one: a flat per-frame cost, not spikes.
    Live and ``behind`` (`EmbeddedSegmenter.note_backlog`), a due update is skipped at most
    `MAX_DEFERRED_LEARNING` times in a row, a filling memory's too: its every-frame learning and frequent
    shape refreshes made a new particle's first ~40 frames cost 3-6x the steady state, enough to
    drop frames of a 200 fps camera after a click (issue 23); it then fills over more frames.

    A filling memory whose deferral ends on an even frame is put off once more, to the next (odd) frame.
    Memories filling together refresh only on odd frames (`filling_refreshes_due`): learning every 4th
    frame while behind, those whose learns fell on even frames were never refreshed until the backlog
    cleared (4 particles landed on a 6-8 ms virtual camera: 0-1 refreshes in 150 frames, masks' IoU 0.64-0.72
    against 0.80-0.84; issue 23). Refreshing them on their even learns instead would stack the refresh on
    the frames where the background and static maps update; this way no learn is added (one fewer) and the
    learns of filling memories while behind fall beside their refresh turns, off the maps' frames.
    """
    filling = track.memory.n_obs < options.memory_frames
    if not filling and (frames_seen + track.particle) % options.appearance_update_interval_frames:
        return False
    if behind and (track.learning_deferred < MAX_DEFERRED_LEARNING
                   or (filling and track.learning_deferred == MAX_DEFERRED_LEARNING
                       and frames_seen % FILLING_REFRESH_SPACING_FRAMES != 1)):
        track.learning_deferred += 1  # one update less (or later) changes little
        return False
    track.learning_deferred = 0
    return True


def filling_refreshes_due(tracks: Sequence[TrackedParticle], frames_seen: int, memory_frames: int) -> frozenset[int]:
    """The particles whose filling memories may refresh their shapes on this frame (`FILLING_REFRESH_SPACING_FRAMES`).

    One or two filling memories, whenever due (their own phases keep them to at most two refreshes a frame).
    Of more, on a refresh frame, those overdue by the most learns (then the lowest ids) among those whose
    next learn makes a refresh due and who take turns on it (`_takes_turns`), one for every
    `FILLING_MEMORIES_PER_REFRESH` filling memories; none on other frames.
    """
    filling = [t for t in tracks if t.memory.n_obs < memory_frames]
    if len(filling) <= FILLING_MEMORIES_ON_OWN_PHASES:
        return frozenset(t.particle for t in filling)
    if frames_seen % FILLING_REFRESH_SPACING_FRAMES != 1:
        return frozenset()
    due = sorted((-overdue, t.particle) for t in filling
                 if _takes_turns(t, frames_seen) and (overdue := t.next_refresh_overdue()) is not None)
    turns = -(-len(filling) // FILLING_MEMORIES_PER_REFRESH)
    return frozenset(particle for _, particle in due[:turns])


def _takes_turns(track: TrackedParticle, frames_seen: int) -> bool:
    """Whether ``track``'s filling memory takes part in this (refresh) frame's turns.

    A memory learning every frame does, on every refresh frame (every 2nd of its learns). One whose learns
    the backlog puts off (`learning_due`) learns on every 4th frame, an odd one: it takes part on every
    second of its learns only, so that while the worker is behind the memories get as many turns per learn
    as when it is not, and no more (taking part at each learn, young memories got twice as many turns per
    learn: their refresh work did not shrink with their learning). Between its learns it takes no part: a
    turn given to a memory that skips its learn is lost to the others.
    """
    if track.learning_deferred == 0:
        return True
    learns_apart = MAX_DEFERRED_LEARNING + 1
    return track.learning_deferred >= MAX_DEFERRED_LEARNING and (frames_seen // learns_apart) % 2 == 1
