"""A stand-in for one luigi-ha scheduler node, run as its own process by the deploy tests.

It answers like a real node as far as HAProxy can tell:

* ``GET|HEAD /leader``: 200 while ``--leader-file`` exists (or with ``--leader``), else 503;
* ``GET|POST /api/<anything>``: the leader answers 200 ``{"node": NAME, "id": ...}`` and
  "applies" the request (prints ``APPLIED <request-id>`` on stdout, flushed); a standby answers
  503 and applies nothing, like the real scheduler.

The first stdout line is ``LISTENING <port>`` (``--port 0`` picks a free one). Being a separate
process lets a test stop a node the hard way (SIGKILL) and lets a network-namespace test run it
with ``ip netns exec``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_print_lock = threading.Lock()


def _emit(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stub-luigi-ha"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def _is_leader(self) -> bool:
        cfg = self.server.cfg  # type: ignore[attr-defined]
        return cfg.leader or bool(cfg.leader_file and os.path.exists(cfg.leader_file))

    def _answer(self, status: int, payload: dict, body: bool = True) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _handle(self, body: bool = True) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        name = self.server.cfg.name  # type: ignore[attr-defined]
        leader = self._is_leader()
        if self.path.split("?")[0] == "/leader":
            self._answer(200 if leader else 503, {"node": name, "leader": leader}, body)
        elif self.path.startswith("/api/"):
            if not leader:
                self._answer(503, {"error": "not the leader", "node": name}, body)
                return
            request_id = self.headers.get("X-Request-Id", "-")
            _emit(f"APPLIED {request_id}")
            self._answer(200, {"node": name, "id": request_id}, body)
        else:
            self._answer(404, {"error": f"no such path {self.path}"}, body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(body=False)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # HAProxy closes a check connection as soon as it has the status line: not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--leader-file", default="")
    parser.add_argument("--leader", action="store_true", help="always the leader")
    cfg = parser.parse_args(argv)
    server = _Server((cfg.host, cfg.port), _Handler)
    server.cfg = cfg  # type: ignore[attr-defined]
    _emit(f"LISTENING {server.server_address[1]}")
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
