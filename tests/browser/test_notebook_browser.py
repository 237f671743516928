"""The notebook widget in a real browser: JupyterLab 4 served locally, headless Chromium driven by Playwright.

One notebook, as a user would run it: simulate a 1024² clip, show `TrackerWidget`, click on a simulated
particle and see its mask pixels appear on the page's canvas (the click-to-mask latency is measured in the
page and kept in test-artifacts/notebook_browser.json), press Track, wait for the statistics, then read the
trajectories back from a kernel-side check printed into an output cell.

Needs Chromium (Debian's ``chromium``; `make browser-deps` installs it) and the ``notebook-test`` extra.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebook-test]'")
pytest.importorskip("anywidget", reason="pip install -e '.[notebook-test]'")
pytest.importorskip("jupyterlab", reason="pip install -e '.[notebook-test]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[notebook-test]'")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium: `make browser-deps` (apt-get install chromium)"),
    pytest.mark.timeout(240),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "sam4em-browser-test"
# JupyterLab 4 in CI; SAM4EM_BROWSER_UI=notebook runs the same test in Jupyter Notebook 7 (pip install notebook)
UI = os.environ.get("SAM4EM_BROWSER_UI", "lab")
FRAMES = 20  # the tMSD fit needs tracks of 17 frames
# The 300 ms click-to-mask target is a benchmark figure (written to test-artifacts/notebook_browser.json and
# reported in docs/notebook.md): a shared CI machine's load must not fail the test. The test asserts only
# that a mask appears interactively at all.
INTERACTIVE_LIMIT_MS = 5000.0

CELLS = [
    # 0: the widget on a simulated 1024² clip (4 particles), and where the particles start
    "import sam4em_live as s4\n"
    "from sam4em_live.notebook import TrackerWidget\n"
    f"clip = s4.simulate('multi-1024', frames={FRAMES}, progress=False)\n"
    "widget = TrackerWidget(clip, display_px=512)\n"
    "print('TARGETS', [(p.particle, *p.points[0]) for p in clip.prompts])\n"
    "widget",
    # 1: the kernel-side check, run after Track
    "run = widget.wait(120)\n"
    "table = run.trajectories\n"
    "print('TRAJECTORIES', len(table), sorted(int(p) for p in table.particle.unique()),"
    " int(table.groupby('particle').size().min()), widget.edits)",
    # 2: the live view of a small service on a simulated camera, and where its particle starts
    "from sam4em_live.notebook import LiveView\n"
    "service = s4.build_service(s4.ServiceConfig.from_mapping({\n"
    "    'source': {'kind': 'simulator', 'preset': 'demo', 'fps': 20.0}, 'segmenter': {'backend': 'threshold'},\n"
    "    'recorder': {'enabled': False}, 'control': {'endpoint': 'tcp://127.0.0.1:0'},\n"
    "    'publisher': {'endpoint': 'tcp://127.0.0.1:0', 'preview_fps': 10.0, 'preview_max_edge_px': 128}}))\n"
    "service.service.start()\n"
    "live = LiveView(service.publisher.endpoint, control=service.control.endpoint, display_px=320)\n"
    "start = s4.simulate('demo', frames=1, progress=False).prompts[0]\n"
    "print('LIVE', start.particle, *start.points[0])\n"
    "live",
    # 3: what the live view learnt from the service after the click, then detach
    "print('LIVEPOSITIONS', sorted(live.positions), live.message)\n"
    "live.close(); service.service.stop(); service.close()",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PROPOSAL_CELLS = [
    # 0: a service in propose mode on two still dark discs, and a live view of it
    "import numpy as np, sam4em_live as s4\n"
    "from sam4em_live.notebook import LiveView\n"
    "from sam4em_live.sources.array_source import ArraySource\n"
    "rng = np.random.default_rng(1); rows, cols = np.mgrid[0:160, 0:192]; base = np.full((160, 192), 200.0)\n"
    "for x, y in ((50.0, 60.0), (140.0, 100.0)):\n"
    "    base[(cols - x) ** 2 + (rows - y) ** 2 <= 81] = 120.0\n"
    "frames = np.stack([np.clip(base + rng.normal(0, 20, base.shape), 0, 65535).astype(np.uint16) for _ in range(1000)])\n"
    "service = s4.build_service(s4.ServiceConfig.from_mapping({\n"
    "    'segmenter': {'backend': 'threshold'}, 'recorder': {'enabled': False},\n"
    "    'control': {'endpoint': 'tcp://127.0.0.1:0'}, 'calibration': {'pixel_size_nm': 1.0, 'fps': 40.0},\n"
    "    'publisher': {'endpoint': 'tcp://127.0.0.1:0', 'preview_fps': 10.0, 'preview_max_edge_px': 96},\n"
    "    'discovery': {'mode': 'propose', 'every_n_frames': 2, 'persistence_frames': 2}}),\n"
    "    source=ArraySource(frames, delay_s=0.05))\n"
    "live = LiveView(service.publisher.endpoint, control=service.control.endpoint, display_px=384)\n"
    "service.service.start()\n"
    "live",
    # 1: what the kernel knows after the accept, then detach
    "print('ACCEPTED', {p: [round(v) for v in xy] for p, xy in live.positions.items()}, live.message)\n"
    "live.close(); service.service.stop(); service.close()",
]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free loopback port with the test notebook in its root."""
    yield from _serve_notebook(tmp_path, CELLS)


@pytest.fixture
def proposals_lab(tmp_path):
    """The same server with the discovery-proposals notebook."""
    yield from _serve_notebook(tmp_path, PROPOSAL_CELLS)


def _serve_notebook(tmp_path, cells):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "widget.ipynb")
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "IPYTHONDIR": str(tmp_path / "ipython"), "PYTHONWARNINGS": "ignore"}
    if UI == "notebook":
        pytest.importorskip("notebook", reason="SAM4EM_BROWSER_UI=notebook needs Notebook 7: pip install notebook")
    command = [sys.executable, "-m", "notebook" if UI == "notebook" else "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--ServerApp.root_dir={tmp_path}", f"--IdentityProvider.token={TOKEN}",
               f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.news_url=",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--allow-root",
               "--ServerApp.terminals_enabled=False"]
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-3000:]}") from None
                time.sleep(0.25)
        yield f"{url}/{'notebooks' if UI == 'notebook' else 'lab/tree'}/widget.ipynb?token={TOKEN}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _run_cell(page, index: int) -> None:
    """Select cell ``index`` and run it; retried while the kernel is still connecting (the key is then lost)."""
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(20):  # the first tries can come before the kernel has started
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Escape")  # command mode: the cell, not its text, takes the key
        page.keyboard.press("Control+Enter")
        try:
            page.wait_for_function("(el) => /\\[(\\*|\\d+)\\]/.test(el.textContent)", arg=prompt.element_handle(),
                                   timeout=5_000)
            return
        except sync_api.TimeoutError:
            continue
    raise AssertionError(f"cell {index} never started running")


def _output_line(page, index: int, marker: str, timeout_s: float) -> str:
    output = page.locator(".jp-Notebook .jp-CodeCell").nth(index).locator(".jp-OutputArea-output")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = " ".join(output.all_inner_texts())
        if marker in text:
            return next(line for line in text.splitlines() if marker in line)
        if "Traceback" in text or "Error" in text:
            raise AssertionError(text[-3000:])
        time.sleep(0.2)
    raise AssertionError(f"no {marker!r} in cell {index}'s output after {timeout_s} s")


def _click_frame_pixel(page, x: float, y: float, modifiers=()) -> None:
    """Click where frame pixel (x = column, y = row) is drawn on the widget's canvas."""
    page.locator(".s4-tracker .s4-marks").scroll_into_view_if_needed()  # clicks land only inside the viewport
    box = page.locator(".s4-tracker .s4-marks").bounding_box()
    cols = rows = 1024
    page.mouse.move(box["x"] + (x + 0.5) / cols * box["width"], box["y"] + (y + 0.5) / rows * box["height"])
    for key in modifiers:
        page.keyboard.down(key)
    page.mouse.down()
    page.mouse.up()
    for key in modifiers:
        page.keyboard.up(key)


def _live_view(page) -> None:
    """The live view shows the service's frames; a click prompts a particle the service then tracks."""
    _run_cell(page, 2)
    particle, x, y = _output_line(page, 2, "LIVE", 60).split()[1:4]
    live = page.locator(".s4-live")
    live.wait_for(timeout=30_000)
    page.wait_for_function("() => Number(document.querySelector('.s4-live')?.dataset.frame) > 0", timeout=30_000)
    # the frame number shows as soon as a result arrives; its preview is decoded asynchronously after it
    page.wait_for_function("() => document.querySelector('.s4-live')?.dataset.drawn !== undefined", timeout=30_000)
    rows, cols = (int(v) for v in page.evaluate(
        "() => { const c = document.querySelector('.s4-live .s4-frame'); return [c.height, c.width]; }"))
    assert rows > 0 and cols <= 128  # the service's decimated preview was drawn
    live.locator(".s4-marks").scroll_into_view_if_needed()  # a mouse click lands only inside the viewport
    box = live.locator(".s4-marks").bounding_box()
    full_rows, full_cols = int(live.get_attribute("data-rows")), int(live.get_attribute("data-cols"))
    assert full_cols > cols  # clicks are in full-frame pixels, not the preview's
    page.mouse.click(box["x"] + (float(x) + 0.5) / full_cols * box["width"],
                     box["y"] + (float(y) + 0.5) / full_rows * box["height"])
    page.wait_for_function(f"() => document.querySelector('.s4-live .s4-message').textContent.includes('particle {particle}:')",
                           timeout=15_000)
    time.sleep(1.0)  # a few published frames with the new particle
    _run_cell(page, 3)
    line = _output_line(page, 3, "LIVEPOSITIONS", 30)
    assert f"'{particle}'" in line, line


def _drag_frame_box(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag on the widget's canvas from frame pixel ``start`` to ``end`` (x, y)."""
    page.locator(".s4-tracker .s4-marks").scroll_into_view_if_needed()  # clicks land only inside the viewport
    box = page.locator(".s4-tracker .s4-marks").bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + (x + 0.5) / 1024 * box["width"], box["y"] + (y + 0.5) / 1024 * box["height"]

    page.mouse.move(*at(*start))
    page.mouse.down()
    page.mouse.move(*at(*end), steps=6)
    page.mouse.up()


def _canvas_mask_pixels(page) -> int:
    return int(page.evaluate("""() => {
        const c = document.querySelector('.s4-tracker .s4-masks');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let k = 3; k < d.length; k += 4) if (d[k] > 0) n++; return n; }"""))


def test_click_shows_the_mask_then_track_gives_trajectories(lab):
    started = time.monotonic()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        try:
            page.goto(lab, wait_until="domcontentloaded")
            page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=60_000)
            _run_cell(page, 0)
            targets = json.loads(re.sub(r"[()]", lambda m: "[" if m.group() == "(" else "]",
                                        _output_line(page, 0, "TARGETS", 90).split("TARGETS", 1)[1]))
            widget = page.locator(".s4-tracker[data-ready='1']")
            widget.wait_for(timeout=30_000)
            page.wait_for_function("() => document.querySelector('.s4-tracker')?.dataset.maskPixels === '0'",
                                   timeout=30_000)
            assert _canvas_mask_pixels(page) == 0

            # click on each simulated particle (a fresh id each), measuring click -> mask drawn in the page
            # click on three simulated particles (a fresh id each), measuring click -> mask drawn in the page;
            # every message the page sends has the next id, and the kernel's redraw names the one it answers
            latencies_ms, pixels, sent = [], [], 0

            def answered(message_id: int) -> None:
                page.wait_for_function(
                    f"() => document.querySelector('.s4-tracker').dataset.answered === '{message_id}'", timeout=30_000)

            def new_particle(particle: int) -> None:
                nonlocal sent
                page.locator(".s4-tracker .s4-new").click()
                sent += 1
                page.wait_for_function(
                    f"() => document.querySelector('.s4-tracker .s4-particle').value === '{particle}'", timeout=10_000)

            for k, (particle, x, y) in enumerate(targets[:3]):
                if k:
                    new_particle(particle)
                _click_frame_pixel(page, x, y)
                sent += 1
                answered(sent)
                latencies_ms.append(float(widget.get_attribute("data-last-latency-ms")))
                pixels.append(_canvas_mask_pixels(page))
            assert all(n > 0 for n in pixels) and pixels == sorted(pixels), pixels  # each click adds a mask

            # the fourth particle by dragging a box around it
            particle, x, y = targets[3]
            new_particle(particle)
            _drag_frame_box(page, (x - 30, y - 30), (x + 30, y + 30))
            sent += 1
            answered(sent)
            pixels.append(_canvas_mask_pixels(page))
            assert pixels[-1] > pixels[-2], pixels

            # a negative point (shift-click) on background for particle 1: its mask stays
            page.locator(".s4-tracker .s4-chip").first.click()
            page.wait_for_function("() => document.querySelector('.s4-tracker .s4-particle').value === '1'",
                                   timeout=10_000)
            _click_frame_pixel(page, targets[0][1] + 80, targets[0][2], modifiers=("Shift",))
            sent += 1
            answered(sent)
            assert abs(_canvas_mask_pixels(page) - pixels[-1]) < 0.2 * pixels[0]

            page.locator(".s4-tracker .s4-track").click()
            page.wait_for_function("() => document.querySelector('.s4-tracker').dataset.phase === 'tracked'",
                                   timeout=120_000)
            page.locator(".s4-tracker img.s4-figure-tmsd").wait_for(timeout=10_000)
            message = page.locator(".s4-tracker .s4-message").inner_text()
            assert "tracked 4 particles" in message, message

            # scrubbing: the last frame shows the run's masks
            page.evaluate(f"""() => {{ const s = document.querySelectorAll('.s4-tracker .s4-slider input')[0];
                s.value = '{FRAMES - 1}'; s.dispatchEvent(new Event('change')); }}""")
            page.wait_for_function(f"() => document.querySelector('.s4-tracker .s4-slider .s4-value').textContent === '{FRAMES - 1}'",
                                   timeout=10_000)
            page.wait_for_function("() => Number(document.querySelector('.s4-tracker').dataset.maskPixels) > 0",
                                   timeout=10_000)
            assert _canvas_mask_pixels(page) > 0.5 * pixels[-1]

            _run_cell(page, 1)
            line = _output_line(page, 1, "TRAJECTORIES", 60)
            rows, ids, shortest = re.match(r"TRAJECTORIES (\d+) \[([\d, ]+)\] (\d+)", line).groups()
            assert [int(i) for i in ids.split(",")] == [t[0] for t in targets]
            assert int(shortest) == FRAMES and int(rows) == len(targets) * FRAMES
            assert "labels=(1, 0)" in line and "box=(" in line, line  # the shift-click and the drag, as edits
            _live_view(page)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "notebook_browser_failure.png"), full_page=True)
            raise
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator(".s4-tracker").screenshot(path=str(ARTIFACTS / "notebook_browser.png"))
        browser.close()
    elapsed = time.monotonic() - started
    report = {"ui": UI, "frame_px": [1024, 1024], "backend": "embedded", "click_to_mask_ms": latencies_ms,
              "mask_pixels_after_each_click": pixels, "test_seconds": round(elapsed, 1)}
    (ARTIFACTS / "notebook_browser.json").write_text(json.dumps(report, indent=2) + "\n")
    print(report)
    assert len(targets) == 4
    # the best click: the first click of a session can meet a kernel busy with the frame
    assert min(latencies_ms) <= INTERACTIVE_LIMIT_MS, report


def test_live_view_accepts_a_clicked_proposal(proposals_lab):
    """Discovery proposals in the live view: listed and outlined; a click selects one, **accept selected** makes
    the service track it (read back from the kernel), **reject all** empties the list."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 1200})
        try:
            page.goto(proposals_lab, wait_until="domcontentloaded")
            page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=60_000)
            _run_cell(page, 0)
            live = page.locator(".s4-live")
            live.wait_for(timeout=60_000)
            page.wait_for_function("() => document.querySelectorAll('.s4-live .s4-proposal').length === 2",
                                   timeout=60_000)
            rows = live.locator(".s4-proposal")
            texts = [rows.nth(k).inner_text() for k in range(2)]
            assert all(re.match(r"P\d+ \d+\.\dσ", t) for t in texts), texts
            # the left disc (50, 60): click it on the canvas, which selects its proposal
            left = min(range(2), key=lambda k: float(re.search(r"\((\d+), ", texts[k]).group(1)))
            left_id = rows.nth(left).get_attribute("data-proposal")
            right_id = rows.nth(1 - left).get_attribute("data-proposal")
            page.wait_for_function("() => Number(document.querySelector('.s4-live').dataset.rows) > 0", timeout=30_000)
            live.locator(".s4-marks").scroll_into_view_if_needed()
            box = live.locator(".s4-marks").bounding_box()
            full_rows, full_cols = int(live.get_attribute("data-rows")), int(live.get_attribute("data-cols"))
            page.mouse.click(box["x"] + 50.5 / full_cols * box["width"], box["y"] + 60.5 / full_rows * box["height"])
            assert live.get_attribute("data-selected-proposal") == left_id
            ARTIFACTS.mkdir(exist_ok=True)
            live.screenshot(path=str(ARTIFACTS / "notebook_proposals.png"))  # both outlined, the left one selected
            live.locator(".s4-accept-selected").click()
            page.wait_for_function(f"() => !document.querySelector('.s4-live').dataset.proposals.split(',').includes('{left_id}')",
                                   timeout=10_000)
            page.wait_for_function("() => document.querySelector('.s4-live .s4-message').textContent.includes('accepted')",
                                   timeout=15_000)
            assert f"P{left_id} → #1" in live.locator(".s4-message").inner_text()
            time.sleep(1.0)  # a few published frames with the new particle
            live.locator(".s4-reject-all").click()
            page.wait_for_function("() => document.querySelectorAll('.s4-live .s4-proposal').length === 0", timeout=10_000)
            _run_cell(page, 1)  # closes the live view
            line = _output_line(page, 1, "ACCEPTED", 30)
            positions = json.loads(re.search(r"\{.*?\}", line).group().replace("'", '"'))
            assert list(positions) == ["1"], line  # the accepted disc, under the service's first id; not the rejected
            assert abs(positions["1"][0] - 50) <= 3 and abs(positions["1"][1] - 60) <= 3, line
            assert f"rejected P{right_id}" in line, line
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "notebook_proposals_failure.png"), full_page=True)
            raise
        browser.close()
