"""Test helper: collect every published results message on a background thread."""

from __future__ import annotations

import threading

import zmq

from sam4em_live.sinks.results_schema import decode_message


class ResultsCollector:
    """A SUB socket on its own thread keeping every (topic, body) it receives, like a user script would."""

    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.messages: list[tuple[bytes, dict]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(50):
                topic, body, _ = decode_message(self.sock.recv_multipart())
                self.messages.append((topic, body))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close(linger=0)

    def of(self, topic: bytes) -> list[dict]:
        return [b for t, b in self.messages if t == topic]
