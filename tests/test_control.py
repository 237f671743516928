"""Control channel over real ZeroMQ sockets on loopback (port 0), against a small real ServiceControl."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import msgpack
import pytest
import typer
from typer.testing import CliRunner

from sam4em_live.control import (
    ControlClient,
    ControlError,
    ControlSecurityError,
    ControlServer,
    ControlTimeout,
)
from sam4em_live.control import commands as control_commands
from sam4em_live.control.keys import generate_keys, load_client_keys
from sam4em_live.control.schema import MAX_POINTS_PER_PROMPT, encode_request
from sam4em_live.control.server import is_loopback_endpoint
from sam4em_live.control_api import QuotaExceeded, ServiceState, StatusSnapshot
from sam4em_live.particles import ParticleEdit, Prompt, PromptError, RemoveParticle

LOOPBACK = "tcp://127.0.0.1:0"


class RecordingControl:
    """A tiny real `ServiceControl`: records what it is asked, answers from its own state."""

    def __init__(self) -> None:
        self.edits: list[ParticleEdit] = []
        self.notes: list[str] = []
        self.paused = False
        self.status_delay_s = 0.0
        self.fail_config = False

    def submit_edit(self, edit: ParticleEdit) -> None:
        if edit.particle == 13:
            raise PromptError("particle 13 is unlucky")
        if edit.particle == 99:
            raise QuotaExceeded("max_particles", "32 particles are tracked; the limit is 32")
        self.edits.append(edit)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def status(self) -> StatusSnapshot:
        time.sleep(self.status_delay_s)
        state = ServiceState.PAUSED if self.paused else ServiceState.STREAMING
        return StatusSnapshot(state=state, frames_processed=len(self.edits), particles=(1, 2), paused=self.paused)

    def describe_config(self) -> dict[str, Any]:
        if self.fail_config:
            raise RuntimeError("config store exploded")
        return {"pipeline": {"backpressure": "latest"}}

    def particles(self) -> list[dict[str, Any]]:
        return [{"particle": 1, "x": 10.5, "y": 20.25, "present": True}]

    def annotate(self, text: str) -> None:
        self.notes.append(text)


@pytest.fixture
def control() -> RecordingControl:
    return RecordingControl()


@pytest.fixture
def served(control: RecordingControl):
    server = ControlServer(control, LOOPBACK, max_message_bytes=4096)
    endpoint = server.start()
    client = ControlClient(endpoint, timeout_s=2.0)
    yield server, client
    client.close()
    server.stop()


def test_every_operation_reaches_the_service(served, control: RecordingControl) -> None:
    server, client = served
    assert client.ping() == {"pong": True, "schema": 1}
    client.add_prompt(1, points=[(100.0, 50.5)], box=(90, 40, 110, 60))
    client.correct(1, points=[(101.0, 51.0), (5.0, 5.0)], labels=[1, 0], frame=7)
    client.remove(2, frame=9)
    assert client.pause() == {"paused": True}
    assert client.status()["state"] == "paused" and control.paused
    client.resume()
    assert client.status()["state"] == "streaming"
    assert client.config() == {"pipeline": {"backpressure": "latest"}}
    assert client.particles()[0]["x"] == 10.5
    client.annotate("added salt at frame 1200")
    assert control.edits == [
        Prompt(1, None, ((100.0, 50.5),), (1,), (90.0, 40.0, 110.0, 60.0)),
        Prompt(1, 7, ((101.0, 51.0), (5.0, 5.0)), (1, 0), None),
        RemoveParticle(2, 9),
    ]
    assert control.notes == ["added salt at frame 1200"]
    assert server.counters.errors == 0


MALFORMED = [
    ("not msgpack", b"\xc1\xc1\xc1", "malformed"),
    ("a list", msgpack.packb([1, 2]), "malformed"),
    ("no op", msgpack.packb({"v": 1}), "bad_request"),
    ("extra key", msgpack.packb({"v": 1, "op": "ping", "x": 1}), "bad_request"),
    ("version 2", msgpack.packb({"v": 2, "op": "ping"}), "unsupported_version"),
    ("unknown op", encode_request("self_destruct"), "unknown_op"),
    ("op not str", msgpack.packb({"v": 1, "op": 5}), "unknown_op"),
    ("args not map", msgpack.packb({"v": 1, "op": "ping", "args": [1]}), "bad_request"),
    ("args for ping", encode_request("ping", {"a": 1}), "bad_request"),
    ("particle str", encode_request("add_prompt", {"particle": "1", "points": [[1, 2]]}), "bad_request"),
    ("particle 0", encode_request("remove", {"particle": 0}), "bad_request"),
    ("particle bool", encode_request("remove", {"particle": True}), "bad_request"),
    ("nan point", encode_request("add_prompt", {"particle": 1, "points": [[math.nan, 2.0]]}), "bad_request"),
    ("point triple", encode_request("add_prompt", {"particle": 1, "points": [[1, 2, 3]]}), "bad_request"),
    ("label 2", encode_request("add_prompt", {"particle": 1, "points": [[1, 2]], "labels": [2]}), "bad_request"),
    ("labels short", encode_request("add_prompt", {"particle": 1, "points": [[1, 2]], "labels": []}), "bad_request"),
    ("no points no box", encode_request("add_prompt", {"particle": 1}), "bad_request"),
    ("box of 3", encode_request("add_prompt", {"particle": 1, "box": [1, 2, 3]}), "bad_request"),
    ("negative frame", encode_request("remove", {"particle": 1, "frame": -1}), "bad_request"),
    ("empty note", encode_request("annotate", {"text": "  "}), "bad_request"),
    ("note not str", encode_request("annotate", {"text": 12}), "bad_request"),
    (
        "too many points",
        encode_request("add_prompt", {"particle": 1, "points": [[1, 1]] * (MAX_POINTS_PER_PROMPT + 1)}),
        "bad_request",
    ),
    ("too large", encode_request("annotate", {"text": "x" * 5000}), "too_large"),
    ("int map key", msgpack.packb({1: 1}), "malformed"),
]


@pytest.mark.parametrize("payload, code", [(p, c) for _, p, c in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_requests_get_error_replies(served, control: RecordingControl, payload: bytes, code: str) -> None:
    server, client = served
    with pytest.raises(ControlError) as info:
        client.send_raw(payload)
    assert info.value.code == code
    assert control.edits == [] and control.notes == []
    assert client.ping()["pong"] is True  # still serving
    assert server.counters.errors_by_code == {code: 1}


def test_multipart_request_is_refused(served) -> None:
    import zmq

    server, _client = served
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    sock.connect(server.endpoint)
    sock.send_multipart([encode_request("ping"), b"extra"])
    assert sock.poll(2000)
    reply = msgpack.unpackb(sock.recv())
    sock.close()
    assert reply["ok"] is False and reply["error"]["code"] == "malformed"


def test_service_errors_become_error_replies(served, control: RecordingControl) -> None:
    _, client = served
    with pytest.raises(ControlError, match="invalid_prompt: particle 13"):
        client.add_prompt(13, points=[(1.0, 1.0)])
    control.fail_config = True
    with pytest.raises(ControlError, match="internal: RuntimeError: config store exploded"):
        client.config()
    assert client.ping()["pong"] is True


def test_timeout_then_reconnect_gets_the_right_reply(served, control: RecordingControl) -> None:
    _, client = served
    control.status_delay_s = 0.6
    client.timeout_s = 0.2
    with pytest.raises(ControlTimeout, match="no reply"):
        client.status()
    control.status_delay_s = 0.0
    client.timeout_s = 3.0
    # A fresh REQ socket: the late status reply must not be mistaken for this one.
    assert client.ping() == {"pong": True, "schema": 1}


def test_client_without_server_times_out_clearly() -> None:
    with ControlClient("tcp://127.0.0.1:9", timeout_s=0.2) as client, pytest.raises(ControlTimeout, match=r"tcp://127\.0\.0\.1:9"):
        client.ping()


@pytest.mark.parametrize(
    "endpoint, loopback",
    [
        ("tcp://127.0.0.1:5557", True),
        ("tcp://127.3.2.1:0", True),
        ("tcp://localhost:5557", True),
        ("tcp://[::1]:5557", True),
        ("ipc:///tmp/sam4em.sock", True),
        ("tcp://*:5557", False),
        ("tcp://0.0.0.0:5557", False),
        ("tcp://192.168.1.20:5557", False),
        ("tcp://eth0:5557", False),
    ],
)
def test_loopback_detection(endpoint: str, loopback: bool) -> None:
    assert is_loopback_endpoint(endpoint) is loopback


def test_non_loopback_without_keys_is_refused(control: RecordingControl) -> None:
    with pytest.raises(ControlSecurityError, match="sam4em-live keys"):
        ControlServer(control, "tcp://0.0.0.0:0").start()


def test_insecure_non_loopback_bind_warns_loudly(control: RecordingControl, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sam4em_live.control.server")
    with ControlServer(control, "tcp://0.0.0.0:0", insecure=True) as server:
        port = server.endpoint.rsplit(":", 1)[1]
        with ControlClient(f"tcp://127.0.0.1:{port}") as client:
            assert client.ping()["pong"] is True
    assert any("INSECURE CONTROL CHANNEL" in r.message for r in caplog.records)


@pytest.fixture
def keys(tmp_path):
    generate_keys(tmp_path / "keys", ("client",))
    generate_keys(tmp_path / "stranger", ("client",))  # valid keys, not authorized
    return tmp_path


def test_curve_accepts_authorized_and_refuses_others(keys, control: RecordingControl) -> None:
    server = ControlServer(control, LOOPBACK, curve_keys_dir=keys / "keys")
    endpoint = server.start()
    try:
        with ControlClient.from_keys_dir(endpoint, keys / "keys", timeout_s=3.0) as good:
            assert good.ping()["pong"] is True
        with ControlClient(endpoint, timeout_s=0.5) as plain, pytest.raises(ControlTimeout):
            plain.pause()
        stranger_keys = load_client_keys(keys / "stranger")
        wrong = type(stranger_keys)(stranger_keys.public, stranger_keys.secret, load_client_keys(keys / "keys").server_public)
        with ControlClient(endpoint, timeout_s=0.5, curve_keys=wrong) as impostor, pytest.raises(ControlTimeout):
            impostor.pause()
        assert control.paused is False
        assert server.counters.refused_handshakes >= 2  # the plain client and the impostor, both logged
        with ControlClient.from_keys_dir(endpoint, keys / "keys", timeout_s=3.0) as good:
            good.pause()
        assert control.paused is True
    finally:
        server.stop()


def test_curve_on_all_interfaces_is_allowed_without_insecure(keys, control: RecordingControl) -> None:
    with ControlServer(control, "tcp://0.0.0.0:0", curve_keys_dir=keys / "keys") as server:
        assert server.secure


def test_keys_command_writes_keys_and_refuses_overwrite(tmp_path) -> None:
    app = typer.Typer()
    control_commands.register(app)

    @app.callback()
    def _root() -> None:  # make "keys" a subcommand, as in the real app
        pass

    out = tmp_path / "k"
    result = CliRunner().invoke(app, ["keys", "--out", str(out), "--client", "monitor", "--client", "script"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "authorized_clients").iterdir()) == ["monitor.key", "script.key"]
    assert (out / "server.key_secret").stat().st_mode & 0o077 == 0
    again = CliRunner().invoke(app, ["keys", "--out", str(out)])
    assert again.exit_code == 2


def test_stop_returns_quickly(control: RecordingControl) -> None:
    server = ControlServer(control, LOOPBACK)
    server.start()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    assert threading.active_count() < 50


def test_a_flood_is_paced_not_served_at_once(control: RecordingControl) -> None:
    server = ControlServer(control, LOOPBACK, max_requests_per_s=20.0)
    endpoint = server.start()
    try:
        with ControlClient(endpoint, timeout_s=3.0) as client:
            t0 = time.monotonic()
            for _ in range(40):  # 20 at once (one second's burst), then 20 a second
                client.ping()
            elapsed = time.monotonic() - t0
    finally:
        server.stop()
    assert 0.8 < elapsed < 3.0
    assert server.counters.paced > 0 and server.counters.requests == 40


def test_quota_refusals_get_their_own_code(served, control: RecordingControl) -> None:
    server, client = served
    with pytest.raises(ControlError, match="quota_exceeded: max_particles: 32 particles") as info:
        client.add_prompt(99, points=[(1.0, 1.0)])
    assert info.value.code == "quota_exceeded"
    assert server.counters.errors_by_code == {"quota_exceeded": 1}
