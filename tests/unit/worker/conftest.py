"""A tiny scripted HTTP scheduler stub (http.server on a loopback port) for the client tests.

Each stub answers POST /api/<method> from a script: a list of steps, each ``(status, body)``,
``("sleep", seconds, status, body)`` (answer late) or ``("close",)`` (drop the connection without
answering). The last step repeats forever. Every request is recorded as (method, json args).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest


@dataclass
class Stub:
    script: list[tuple]
    requests: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def next_step(self) -> tuple:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    @property
    def methods(self) -> list[str]:
        return [m for m, _, _ in self.requests]


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            args = json.loads(form.get("data", ["{}"])[0])
            stub.requests.append((self.path.rsplit("/", 1)[-1], args, time.monotonic()))
            step = stub.next_step()
            if step[0] == "close":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if step[0] == "sleep":
                time.sleep(step[1])
                step = step[2:]
            status, body = step
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def stub_server() -> Iterator[Callable[..., Stub]]:
    started: list[ThreadingHTTPServer] = []

    def factory(*script: tuple, port: int = 0) -> Stub:
        stub = Stub(list(script))
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(stub))
        server.daemon_threads = True
        stub.server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(server)
        return stub

    yield factory
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
