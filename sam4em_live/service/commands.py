"""CLI commands of the service: serve, track, camera, demo."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer

from sam4em_live.cli_options import (
    CONTROL_ENDPOINT,
    FRAMES_ENDPOINT,
    RESULTS_ENDPOINT,
    one_line,
    renamed,
    run_folder,
    warn,
)
from sam4em_live.config import ConfigError, ServiceConfig
from sam4em_live.particles import PromptError
from sam4em_live.plugins import parse_assignments
from sam4em_live.service.runs import run_demo, run_replay, run_track

log = logging.getLogger(__name__)


_OPTION_HELP = ("A segmenter option KEY=VALUE, set in [segmenter.options] and checked by the backend's own "
                "options model; repeatable. VALUE is read as TOML (64, 2.5, true, [0.5, 99.5]), else as text. "
                "E.g. --backend sam2 --option checkpoint=sam2.1_hiera_tiny.pt --option device=cuda.")


def _backend_choices() -> str:
    """The segmenter backends (built-ins and plugins), for --backend's help."""
    from sam4em_live.segment.registry import DEFAULT_BACKEND, SEGMENTERS

    try:
        names = SEGMENTERS.names()
    except Exception:  # a broken plugin distribution must not break every command's help
        names = ["embedded", "threshold", "sam2"]
    return f"Segmenter backend: {', '.join(names)} (default: {DEFAULT_BACKEND}; plugins add more)."


_BACKEND_HELP = _backend_choices()


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C / SIGTERM: abandon the clean stop
            raise KeyboardInterrupt
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def serve(
    config: Path = typer.Option(..., "--config", "-c", help="Service config TOML (see configs/)."),
    backend: str | None = typer.Option(None, help=_BACKEND_HELP + " Overrides segmenter.backend."),
    prompts: Path | None = typer.Option(None, help="Prompts file applied from the start."),
    out: Path | None = typer.Option(None, help="The run folder to create (default: RECORDER.OUT_DIR/RUN_ID)."),
    pixel_size_nm: float | None = typer.Option(None, help="Override pixel size (nm)."),
    fps: float | None = typer.Option(None, help="Override frame rate (frames/s)."),
    frames_endpoint: str | None = typer.Option(
        None, FRAMES_ENDPOINT, help="Where the detector's frames come from (overrides source.endpoint)."),
    results_endpoint: str | None = typer.Option(
        None, RESULTS_ENDPOINT, help="Where results are published (overrides publisher.endpoint)."),
    control_endpoint: str | None = typer.Option(
        None, CONTROL_ENDPOINT, help="Where the control channel binds (overrides control.endpoint)."),
    insecure: bool = typer.Option(
        False, "--insecure", help="Allow a control channel beyond loopback WITHOUT CURVE keys (logged loudly)."
    ),
    option: list[str] = typer.Option([], "--option", help=_OPTION_HELP),
) -> None:
    """Live: frames in over ZeroMQ, results out, recording on. Ctrl-C stops cleanly."""
    from sam4em_live.control.server import ControlSecurityError
    from sam4em_live.service.builder import build_service

    out_dir, run_id = run_folder(out)
    try:
        cfg = ServiceConfig.from_file(config).with_overrides({
            "segmenter.backend": backend, "prompts": prompts.absolute() if prompts else None,
            "recorder.out_dir": out_dir, "calibration.pixel_size_nm": pixel_size_nm, "calibration.fps": fps,
            "source.endpoint": frames_endpoint, "publisher.endpoint": results_endpoint,
            "control.endpoint": control_endpoint, "control.insecure": True if insecure else None,
        }).with_segmenter_options(parse_assignments(option))
        built = build_service(cfg, run_id=run_id)
    except (ConfigError, PromptError, FileNotFoundError, ValueError, ControlSecurityError) as exc:
        _fail(one_line(exc))
        return
    stop = threading.Event()
    _stop_on_signals(stop)
    built.service.start()
    typer.echo(f"serving: run {built.service.run_id}; results on "
               f"{getattr(built.publisher, 'endpoint', '-')}; control on {getattr(built.control, 'endpoint', '-')}")
    try:
        while not stop.wait(0.2):
            if built.service.wait(0):
                break
    finally:
        built.service.finish()  # the run folder is closed (run.json final) before the process exits
        built.close()
    if built.run_dir is not None:
        typer.echo(f"run directory: {built.run_dir}")
    if built.service.error is not None:
        _fail(f"service failed: {built.service.error}")


def track(
    input: Path = typer.Argument(..., help="Recording: TIFF, .dm3/.dm4, Velox .emd, .ser/.emi, .mrc, MP4/AVI, "
                                 "a folder of frame files or a Gatan in-situ folder (docs/formats.md)."),
    prompts: Path | None = typer.Option(None, help="Prompts JSON file (or --replay)."),
    out: Path = typer.Option(..., help="The run folder to create (must not exist)."),
    replay: Path | None = typer.Option(
        None, "--replay", help="A live run's folder: re-run it on INPUT (its recording) with its config and its "
        "edits (edits.jsonl) at the same frames, every frame. Not with --prompts, --backend, --option, --config."),
    backend: str | None = typer.Option(None, help=_BACKEND_HELP),
    fps: float | None = typer.Option(None, help="Frame rate (frames/s) if not in metadata."),
    pixel_size_nm: float | None = typer.Option(None, help="Pixel size (nm) if not in metadata."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Optional config TOML for other settings."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    option: list[str] = typer.Option([], "--option", help=_OPTION_HELP),
) -> None:
    """Offline: run the same pipeline over a recording, every frame, as fast as possible."""
    from sam4em_live.io.edits_log import EditsLogError
    from sam4em_live.sinks.recorder import RecorderError, check_out_dir

    if (prompts is None) == (replay is None):
        _fail("give either --prompts FILE or --replay RUN_DIR")
        return
    if replay is not None and (backend or option or config or fps or pixel_size_nm):
        _fail("--replay runs the live run's own config: --backend, --option, --config, --fps and "
              "--pixel-size-nm cannot change it")
        return
    try:  # before any work: a run that cannot be written is refused (read-only folder, a file in the way)
        check_out_dir(out.parent)
    except RecorderError as exc:
        _fail(f"--out {out}: {exc}")
        return
    try:
        if replay is not None:
            run_dir = run_replay(input, replay, out, progress=progress)
        else:
            assert prompts is not None
            run_dir = run_track(input, prompts, out, backend=backend, fps=fps, pixel_size_nm=pixel_size_nm,
                                config_path=config, progress=progress, segmenter_options=parse_assignments(option))
    except (ConfigError, PromptError, EditsLogError, FileNotFoundError, ValueError) as exc:
        _fail(one_line(exc))
        return
    _warn_unless_complete(run_dir)
    typer.echo(f"run directory: {run_dir}")


def _warn_unless_complete(run_dir: Path) -> None:
    """A run that lost part of its recording (masks, a full disk) says so on stderr, never silently."""
    from sam4em_live.io.run_folder import RunFolder

    folder = RunFolder.open(run_dir)
    if folder.status not in (None, "complete"):
        warn(f"the run is {folder.status}: {folder.manifest.get('reason')} (run.json)")


def camera(
    input: Path | None = typer.Argument(None, help="Recording to publish, at its own rate (any format of "
                                        "docs/formats.md)."),
    preset: str | None = typer.Option(None, help="Publish simulated LPTEM frames of this preset instead."),
    frames_endpoint: str | None = typer.Option(
        None, FRAMES_ENDPOINT, help="Where to bind the PUB socket the frames go out on [default: tcp://127.0.0.1:5555]."),
    endpoint: str | None = typer.Option(None, "--endpoint", hidden=True, help=f"Deprecated: {FRAMES_ENDPOINT}."),
    fps: float | None = typer.Option(None, help="Frames per second (default: recording/preset rate)."),
    pixel_size_nm: float | None = typer.Option(
        None, help="Pixel size (nm) sent with the frames, for a recording that does not record one."),
    frames: int | None = typer.Option(None, help="Stop after this many frames."),
    loop: bool = typer.Option(False, help="Loop the recording."),
    seed: int = typer.Option(0, help="Simulator seed."),
) -> None:
    """Stand-in detector: publish a recording or simulated frames over ZeroMQ (protocol v1)."""
    from sam4em_live.config import SourceConfig
    from sam4em_live.frames import Calibration
    from sam4em_live.sources.camera import FramePublisher, pump
    from sam4em_live.sources.registry import SourceContext, build_source

    if (input is None) == (preset is None):
        _fail("give either a recording INPUT or --preset NAME")
    endpoint = renamed(frames_endpoint, FRAMES_ENDPOINT, endpoint, "--endpoint") or "tcp://127.0.0.1:5555"
    options: dict[str, object] = (
        {"kind": "replay", "path": input, "fps": fps, "loop": loop} if input is not None
        else {"kind": "simulator", "preset": preset, "seed": seed, "frames": frames, "fps": fps})
    try:
        override = Calibration(pixel_size_nm=pixel_size_nm)
        if input is not None and fps is not None and _recorded_fps(input) is None:
            override = Calibration(pixel_size_nm=pixel_size_nm, fps=fps)  # no rate in the file: --fps is its rate
        source = build_source(SourceConfig.model_validate(options), SourceContext(calibration_override=override))
        publisher = FramePublisher(endpoint)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        _fail(one_line(exc))
        return
    stop = threading.Event()
    _stop_on_signals(stop)
    typer.echo(f"camera publishing on {publisher.endpoint}")
    sent = pump(source, publisher, stop, max_frames=frames, series_start_delay_s=1.0)
    publisher.close()
    typer.echo(f"sent {sent} frames")


def _recorded_fps(path: Path) -> float | None:
    """The frame rate a recording's file records (None if it records none)."""
    from sam4em_live.io.reader_registry import open_reader

    reader = open_reader(path)
    try:
        return reader.calibration.fps
    finally:
        reader.close()


def demo(
    seconds: float = typer.Option(20.0, help="How long to stream."),
    backend: str | None = typer.Option(None, help=_BACKEND_HELP),
    out: Path | None = typer.Option(None, help="The run folder to create (default: runs/RUN_ID)."),
    preset: str = typer.Option("demo", help="Simulator preset streamed by the stand-in camera."),
    fps: float | None = typer.Option(None, help="Camera frame rate (default: the preset's)."),
    seed: int = typer.Option(0, help="Simulator seed."),
) -> None:
    """The main job: stand-in camera → service → recorder on loopback, printing live status."""
    out_dir, run_id = run_folder(out)
    try:
        run_dir = run_demo(seconds=seconds, backend=backend, out=out_dir or Path("runs"), preset=preset, fps=fps,
                           seed=seed, echo=typer.echo, run_id=run_id)
    except (ConfigError, PromptError, ValueError, KeyError) as exc:
        _fail(one_line(exc))
        return
    typer.echo(f"run directory: {run_dir}")


def register(app: typer.Typer) -> None:
    """Add the serve, track, camera and demo commands to ``app``."""
    app.command()(serve)
    app.command()(track)
    app.command()(camera)
    app.command()(demo)
