"""Hook API: safety gate, loading, the runner with slow / crashing / hanging hooks, example hooks."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from sam4em_live.config import ConfigError, HooksConfig, HookSpec, SafetyConfig
from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.hooks import (
    AddPrompt,
    Annotate,
    BlankBeam,
    Command,
    CommandGate,
    DryRunMicroscope,
    HookContext,
    HookRunner,
    MoveStage,
    RemovePrompt,
    SimulatedMicroscope,
    StartRecording,
    StopRecording,
    UnblankBeam,
)
from sam4em_live.hooks.api import MicroscopeHandle
from sam4em_live.hooks.commands import COMMAND_NAMES, COMMAND_TYPES
from sam4em_live.hooks.events import EventDetector
from sam4em_live.hooks.examples import KeepCentred, StopWhenLost
from sam4em_live.hooks.loading import LoadedHook, load_hook
from sam4em_live.particles import ParticleMeasurement, Prompt
from sam4em_live.results import FrameResult, RunInfo, ServiceEvent
from sam4em_live.sinks.base import Sink

SHAPE = (64, 96)
CAL = Calibration(pixel_size_nm=2.0, fps=80.0)


#: A move by this many nm (y) jams the `Stage`: the adapter raises, as real hardware can.
JAM_NM = 13.0


class Stage:
    """A tiny stage model: the image shows world - offset / pixel size (image content moves by -d/px)."""

    def __init__(self) -> None:
        self.offset_nm = np.zeros(2)
        self.moves: list[tuple[float, float]] = []

    def move_stage(self, dx_nm: float, dy_nm: float) -> None:
        if dy_nm == JAM_NM:
            raise RuntimeError("stage jammed")
        self.offset_nm += (dx_nm, dy_nm)
        self.moves.append((dx_nm, dy_nm))


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def result(index: int, measurements=(), events=(), stats=None) -> FrameResult:
    frame = Frame("s", index, 1000.0 + index / 80, np.zeros(SHAPE, np.uint8), CAL)
    return FrameResult(frame, (), tuple(measurements), stats or {}, tuple(events))


def run_info() -> RunInfo:
    return RunInfo("run-1", SeriesInfo("s", SHAPE, "|u1", CAL), {"backend": "test"}, {})


# -- safety gate ----------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass(frozen=True)
class SelfDestruct:
    """Looks like a command (it has a name) but is none of `sam4em_live.hooks.commands`."""

    name = "self_destruct"


@pytest.mark.parametrize(
    "command, status, reason",
    [
        (MoveStage(300.0, 400.0), "done", None),
        (MoveStage(300.0, 401.0), "refused", "max_stage_step_nm"),
        (MoveStage(math.nan, 0.0), "refused", "finite"),
        (MoveStage("1", 0.0), "refused", "finite"),  # type: ignore[arg-type]  # hooks are unchecked user code
        (BlankBeam(), "done", None),
        (StartRecording(), "refused", "allowed_commands"),
        (SelfDestruct(), "refused", "unknown command 'self_destruct'"),
        (AddPrompt("not a prompt"), "refused", "Prompt"),  # type: ignore[arg-type]
        (MoveStage(0.0, JAM_NM), "failed", "RuntimeError: stage jammed"),
    ],
)
def test_gate_limits(command: Command, status: str, reason: str | None, clock: FakeClock) -> None:
    stage = Stage()
    limits = SafetyConfig(max_stage_step_nm=500, allowed_commands=("move_stage", "blank_beam", "add_prompt"))
    gate = CommandGate(SimulatedMicroscope(stage), limits, clock=clock)
    outcome = gate.submit(command, hook="test")
    assert outcome.status == status
    assert (reason is None and outcome.reason is None) or reason in outcome.reason
    assert len(stage.moves) == (1 if command.name == "move_stage" and status == "done" else 0)
    assert gate.counts[status] == 1


def test_gate_rate_limit(clock: FakeClock) -> None:
    stage = Stage()
    gate = CommandGate(SimulatedMicroscope(stage), SafetyConfig(max_stage_moves_per_s=2.0), clock=clock)
    move = MoveStage(10.0, 0.0)
    statuses = []
    for t in (0.0, 0.2, 0.49, 0.5, 0.6, 1.01):
        clock.t = t
        statuses.append(gate.submit(move).status)
    assert statuses == ["done", "refused", "refused", "done", "refused", "done"]
    assert len(stage.moves) == 3


def test_dry_run_switch_keeps_the_stage_still(clock: FakeClock) -> None:
    stage = Stage()
    gate = CommandGate(SimulatedMicroscope(stage), SafetyConfig(dry_run=True), clock=clock)
    assert gate.submit(MoveStage(10.0, 5.0)).status == "dry_run"
    assert gate.submit(StopRecording()).status == "dry_run"
    assert stage.moves == []
    assert gate.dry_run_microscope.stage_offset_nm == (10.0, 5.0)
    assert [name for name, _ in gate.dry_run_microscope.history] == ["move_stage", "stop_recording"]


def test_a_failed_move_does_not_use_up_the_rate_limit(clock: FakeClock) -> None:
    stage = Stage()
    gate = CommandGate(SimulatedMicroscope(stage), SafetyConfig(max_stage_moves_per_s=2.0), clock=clock)
    assert gate.submit(MoveStage(0.0, JAM_NM)).status == "failed"
    clock.t = 0.1
    assert gate.submit(MoveStage(1.0, 0.0)).status == "done" and stage.moves == [(1.0, 0.0)]


def test_each_command_reaches_the_adapter_method_of_its_name(clock: FakeClock) -> None:
    """Dispatch is by type; the record's ``name`` is the adapter method and the string in logs and config."""
    control = RecordingControl()
    micro = DryRunMicroscope(control)  # type: ignore[arg-type]
    gate = CommandGate(micro, SafetyConfig(allowed_commands=tuple(sorted(COMMAND_NAMES))), clock=clock)
    prompt = Prompt(4, points=((1.0, 2.0),), labels=(1,))
    commands: list[Command] = [MoveStage(3.0, -4.0), BlankBeam(), UnblankBeam(), StartRecording(), StopRecording(),
                               AddPrompt(prompt), RemovePrompt(4), Annotate("note")]
    assert {type(c) for c in commands} == set(COMMAND_TYPES)  # a new command type needs a row here
    outcomes = [gate.submit(c, hook="all") for c in commands]
    assert [o.status for o in outcomes] == ["done"] * len(commands)
    assert [o.command for o in outcomes] == commands
    assert micro.history == [
        ("move_stage", {"dx_nm": 3.0, "dy_nm": -4.0}), ("blank_beam", {}), ("unblank_beam", {}),
        ("start_recording", {}), ("stop_recording", {}), ("add_prompt", {"particle": 4}),
        ("remove_prompt", {"particle": 4}), ("annotate", {"text": "note"}),
    ]
    assert [c.name for c in commands] == [name for name, _ in micro.history]
    assert micro.stage_offset_nm == (3.0, -4.0) and control.notes == ["note"] and control.edits[0] == prompt


def test_unknown_allowed_command_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="fly_away"):
        CommandGate(DryRunMicroscope(), SafetyConfig(allowed_commands=("fly_away",)))


class RecordingControl:
    def __init__(self) -> None:
        self.edits: list[Any] = []
        self.notes: list[str] = []

    def submit_edit(self, edit: Any) -> None:
        self.edits.append(edit)

    def annotate(self, text: str) -> None:
        self.notes.append(text)


def test_prompt_and_annotate_commands_reach_the_service() -> None:
    control = RecordingControl()
    handle = MicroscopeHandle(CommandGate(DryRunMicroscope(control)), "h")  # type: ignore[arg-type]
    assert handle.add_prompt(Prompt(4, points=((3.0, 4.0),), labels=(1,))).accepted
    assert handle.remove_prompt(4).accepted
    assert handle.annotate("hello").accepted
    assert [e.particle for e in control.edits] == [4, 4] and control.notes == ["hello"]
    assert len(handle.take_outcomes()) == 3 and handle.take_outcomes() == ()
    unbound = MicroscopeHandle(CommandGate(DryRunMicroscope()), "h")
    assert unbound.annotate("x").status == "failed"


# -- loading --------------------------------------------------------------------------------------


class NoOptionsHook:
    def on_result(self, ctx: HookContext) -> None:
        pass


class NotAHook:
    pass


def test_load_by_entry_point_and_path() -> None:
    loaded = load_hook(HookSpec(target="keep-centred", options={"edge_margin_px": 12}))
    assert isinstance(loaded.hook, KeepCentred) and loaded.hook.options.edge_margin_px == 12
    loaded = load_hook(HookSpec(target="sam4em_live.hooks.examples:StopWhenLost"), 3)
    assert isinstance(loaded.hook, StopWhenLost) and loaded.name == "StopWhenLost#3"
    assert isinstance(load_hook(HookSpec(target=f"{__name__}:NoOptionsHook")).hook, NoOptionsHook)


@pytest.mark.parametrize(
    "target, options, message",
    [
        ("keep-centred", {"edge_margin_pix": 3}, r"hooks\.hooks\[0\]\.options: edge_margin_pix: Extra"),
        ("keep-centred", {"edge_margin_px": -1}, "edge_margin_px"),
        ("no-such-hook", {}, "known: keep-centred, stop-when-lost"),
        ("no_such_module:Hook", {}, "cannot import"),
        (f"{__name__}:Missing", {}, "no attribute"),
        (f"{__name__}:NotAHook", {}, "not a class with any of"),
        (f"{__name__}:NoOptionsHook", {"a": 1}, "takes no options"),
    ],
)
def test_load_errors_name_the_problem(target: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_hook(HookSpec(target=target, options=options))


def test_runner_from_config_and_simulated_binding() -> None:
    config = HooksConfig(hooks=(HookSpec(target="stop-when-lost"),), microscope="simulated")
    runner = HookRunner.from_config(config)
    assert isinstance(runner, Sink)
    with pytest.raises(ConfigError, match="simulator source"):
        runner.bind(source=object())
    stage = Stage()
    runner.bind(source=stage)
    assert runner.gate.microscope.describe()["adapter"] == "simulated"


# -- the runner with badly behaved hooks ----------------------------------------------------------


class Recorder:
    """A well-behaved hook: records every frame index and event it sees."""

    def __init__(self) -> None:
        self.frames: list[int] = []
        self.events: list[str] = []
        self.coalesced = 0
        self.started = self.stopped = False

    def on_start(self, ctx: HookContext) -> None:
        self.started = ctx.kind == "start" and ctx.shape == SHAPE

    def on_result(self, ctx: HookContext) -> None:
        self.frames.append(ctx.frame_index)
        self.coalesced += ctx.coalesced

    def on_event(self, ctx: HookContext) -> None:
        self.events.append(ctx.event.kind)

    def on_stop(self, ctx: HookContext) -> None:
        self.stopped = True


class SlowHook:
    def __init__(self) -> None:
        self.calls = 0
        self.events: list[int] = []

    def on_result(self, ctx: HookContext) -> None:
        self.calls += 1
        time.sleep(0.02)

    def on_event(self, ctx: HookContext) -> None:
        self.events.append(ctx.frame_index)


class CrashingHook:
    def on_result(self, ctx: HookContext) -> None:
        raise ZeroDivisionError("hook bug")


class HangingHook:
    def __init__(self) -> None:
        self.release = threading.Event()

    def on_result(self, ctx: HookContext) -> None:
        self.release.wait(30)


def drive(runner: HookRunner, n: int, events_every: int = 0) -> list[float]:
    """Feed ``n`` results; return the duration of each consume() call (s)."""
    runner.open(run_info())
    durations = []
    for i in range(n):
        events = [ServiceEvent("particle_lost", i, 1)] if events_every and i % events_every == 0 else []
        r = result(i, [ParticleMeasurement(1, i, True, x=10.0, y=10.0)], events)
        t0 = time.perf_counter()
        runner.consume(r)
        durations.append(time.perf_counter() - t0)
    return durations


def test_bad_hooks_do_not_stall_consume(caplog) -> None:
    caplog.set_level(logging.INFO, logger="sam4em_live.hooks")
    recorder, slow, hanging = Recorder(), SlowHook(), HangingHook()
    hooks = [LoadedHook("recorder", recorder), LoadedHook("slow", slow), LoadedHook("crash", CrashingHook()),
             LoadedHook("hang", hanging)]
    runner = HookRunner(hooks, hang_timeout_s=0.3)
    durations = drive(runner, 400, events_every=50)
    time.sleep(0.5)  # past the hang timeout
    runner.on_status({"processed_fps": 80.0})
    counters = runner.hook_status()["hooks"]
    hanging.release.set()
    runner.close()

    # A blocked hook would make consume() take >= its sleep / hang time; it must stay far below.
    assert max(durations) < 0.05, f"slowest consume took {max(durations) * 1e3:.1f} ms"
    assert recorder.started and recorder.stopped
    assert recorder.frames[-1] == 399 and recorder.frames == sorted(recorder.frames)
    assert len(recorder.frames) + recorder.coalesced == 400
    assert recorder.events == ["particle_lost"] * 8
    assert slow.events == list(range(0, 400, 50))  # events are never coalesced away
    assert counters["slow"]["coalesced"] > 0 and slow.calls < 400
    assert counters["crash"]["errors"] == counters["crash"]["calls"] > 0
    assert counters["hang"]["hung"] is True and counters["hang"]["hangs"] == 1
    assert counters["hang"]["coalesced"] >= 398
    tracebacks = [r for r in caplog.records if r.exc_info and "crash" in r.getMessage()]
    assert 1 <= len(tracebacks) <= 10 and tracebacks[0].exc_info[0] is ZeroDivisionError
    assert any("appears hung" in r.getMessage() for r in caplog.records)


def test_close_does_not_wait_forever_for_a_hung_hook() -> None:
    hanging = HangingHook()
    runner = HookRunner([LoadedHook("hang", hanging)], hang_timeout_s=0.2)
    drive(runner, 3)
    time.sleep(0.05)
    t0 = time.monotonic()
    runner.close()
    assert time.monotonic() - t0 < 1.0
    assert runner.hook_status()["hooks"]["hang"]["hung"] is True
    hanging.release.set()


class ExitingHook:
    """Calls sys.exit() (SystemExit) -- or raises another BaseException -- on its third result."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    def on_result(self, ctx: HookContext) -> None:
        self.calls += 1
        time.sleep(0.005)  # let results queue behind it
        if self.calls == 3:
            raise self.exc


@pytest.mark.parametrize("exc", [SystemExit(3), GeneratorExit()], ids=["SystemExit", "GeneratorExit"])
def test_a_hook_that_exits_is_reported_dead(exc: BaseException, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="sam4em_live.hooks")
    exiting, recorder = ExitingHook(exc), Recorder()
    runner = HookRunner([LoadedHook("exits", exiting), LoadedHook("recorder", recorder)], hang_timeout_s=0.5)
    runner.open(run_info())
    for i in range(50):  # paced, so the hook sees more than three of them
        runner.consume(result(i, []))
        time.sleep(0.01)
    deadline = time.monotonic() + 5
    while not runner.hook_status()["hooks"]["exits"]["dead"] and time.monotonic() < deadline:
        time.sleep(0.01)
    drive_more = [runner.consume(result(i, [])) for i in range(50, 60)]
    status = runner.hook_status()["hooks"]
    counters = runner.counters
    runner.close()

    assert drive_more == [None] * 10  # consume still returns at once
    assert status["exits"]["dead"] is True and status["exits"]["hung"] is False
    assert counters["hooks.exits.died"] == 1 and counters["hooks.recorder.died"] == 0
    assert exiting.calls == 3  # no calls after it died
    assert recorder.frames[-1] == 59 and recorder.stopped  # the other hook is unaffected
    assert any("hook exits is dead" in r.getMessage() and type(exc).__name__ in r.getMessage()
               for r in caplog.records)


def test_a_dead_hook_becomes_one_hook_died_event() -> None:
    detector = EventDetector()
    sinks = {"HookRunner": {"hooks.exits.died": 1, "hooks.fine.died": 0}}
    first = detector.update(0, SHAPE, [], {"wall_time_s": 1.0, "sinks": sinks})
    again = detector.update(1, SHAPE, [], {"wall_time_s": 2.0, "sinks": sinks})
    assert [(e.kind, e.detail) for e in first] == [("hook_died", {"hook": "exits"})]
    assert again == []


class CommandingHook:
    """Issues a too-large move, then an allowed one via a returned Command; sees outcomes next call."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def on_result(self, ctx: HookContext):
        self.seen.append(tuple(o.status for o in ctx.outcomes))
        if ctx.frame_index == 0:
            ctx.microscope.move_stage(1e6, 0.0)
            return [MoveStage(5.0, 0.0)]
        return None


def test_outcomes_are_reported_to_the_hook() -> None:
    hook = CommandingHook()
    stage = Stage()
    runner = HookRunner([LoadedHook("cmd", hook)], queue_results=10)
    runner.bind(microscope=SimulatedMicroscope(stage))
    drive(runner, 2)
    runner.close()
    assert hook.seen == [(), ("refused", "done")]
    assert stage.moves == [(5.0, 0.0)]
    assert runner.counters["commands.refused"] == 1


# -- example hooks --------------------------------------------------------------------------------


def closed_loop(with_hook: bool, frames: int = 600, drift_px: float = 0.25) -> tuple[int, int]:
    """A particle drifting right at ``drift_px``/frame; return (frames in view, stage moves)."""
    stage = Stage()
    clock = FakeClock()
    gate = CommandGate(SimulatedMicroscope(stage), SafetyConfig(max_stage_step_nm=200), clock=clock)
    handle = MicroscopeHandle(gate, "keep")
    hook = KeepCentred(KeepCentred.Options(edge_margin_px=16, max_step_nm=200, settle_frames=2))
    world = np.array([48.0, 30.0])  # px in the unmoved stage frame
    in_view = 0
    for i in range(frames):
        clock.t = i / 80
        world[0] += drift_px
        x, y = world - stage.offset_nm / CAL.pixel_size_nm  # image content moves by -d / pixel size
        if not (-0.5 <= x < SHAPE[1] - 0.5 and -0.5 <= y < SHAPE[0] - 0.5):
            continue
        in_view += 1
        if with_hook:
            m = ParticleMeasurement(1, i, True, x=float(x), y=float(y))
            hook.on_result(HookContext("result", frame_index=i, shape=SHAPE, calibration=CAL,
                                       measurements=(m,), microscope=handle))
    return in_view, len(stage.moves)


def test_keep_centred_keeps_a_drifting_particle_in_view() -> None:
    without, _ = closed_loop(with_hook=False)
    with_hook, moves = closed_loop(with_hook=True)
    assert without < 300  # it drifts out after ~190 frames
    assert with_hook == 600 and moves >= 3


def test_keep_centred_moves_towards_the_particle() -> None:
    stage = Stage()
    handle = MicroscopeHandle(CommandGate(SimulatedMicroscope(stage)), "keep")
    hook = KeepCentred(KeepCentred.Options(edge_margin_px=10, max_step_nm=1000))
    m = ParticleMeasurement(1, 0, True, x=90.0, y=5.0)  # near the right and top edges
    hook.on_result(HookContext("result", frame_index=0, shape=SHAPE, calibration=CAL, measurements=(m,),
                               microscope=handle))
    (dx, dy), = stage.moves
    assert dx == pytest.approx((90.0 - 47.5) * 2.0) and dy == pytest.approx((5.0 - 31.5) * 2.0)
    no_cal = KeepCentred(KeepCentred.Options(edge_margin_px=10))
    no_cal.on_result(HookContext("result", frame_index=1, shape=SHAPE, measurements=(m,), microscope=handle))
    assert len(stage.moves) == 1  # no pixel size: no move


def test_stop_when_lost_fires_once_per_loss() -> None:
    micro = DryRunMicroscope(RecordingControl())  # type: ignore[arg-type]
    handle = MicroscopeHandle(CommandGate(micro), "stop")
    hook = StopWhenLost(StopWhenLost.Options(lost_frames=5))
    micro.recording = True

    def feed(i: int, present: bool) -> None:
        m = ParticleMeasurement(1, i, present, x=10.0 if present else math.nan, y=10.0 if present else math.nan)
        hook.on_result(HookContext("result", frame_index=i, shape=SHAPE, measurements=(m,), microscope=handle))

    feed(0, True)
    for i in (1, 2, 4):  # frame 3 coalesced away: frame indices count, not calls
        feed(i, False)
    assert hook.fired == 0 and micro.recording
    feed(5, False)
    assert hook.fired == 1 and not micro.recording and micro.beam_blanked
    feed(9, False)
    assert hook.fired == 1
    feed(10, True)
    for i in range(11, 16):
        feed(i, False)
    assert hook.fired == 2
    assert [n for n, _ in micro.history].count("annotate") == 2
