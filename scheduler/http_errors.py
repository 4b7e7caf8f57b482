"""JSON bodies for the errors aiohttp answers before any handler or middleware runs.

The HTTP parser rejects a request line or header over 8 KB, bad chunked encoding or a
malformed request with a 400 of its own, and a request that fails outside the application with a
500; aiohttp writes those as ``text/plain`` from its protocol handler, where an application's
middleware never sees them. Clients of this node (Luigi's, the CLI's, HAProxy's checks, scripts)
are promised a JSON body on every error, so the protocol handler is replaced by one that writes
the same status with a JSON body.

aiohttp offers no public hook for this: :class:`JsonErrorRunner` builds the server the way
``AppRunner`` does and only swaps the class of the per-connection handler it creates.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, with its own error answers written as JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        original = super().handle_error(request, status, exc, message)  # logs and checks as aiohttp does
        if status == HTTPStatus.INTERNAL_SERVER_ERROR:
            text = "internal error; see the node's log"
        else:
            # The parser's message quotes the start of the rejected line; keep it short.
            text = (message or HTTPStatus(status).phrase).strip()[:300]
        body = json.dumps({"error": text, "status": status})
        response = web.Response(status=status, text=body, content_type="application/json")
        response.force_close()
        del original
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An ``AppRunner`` whose connections answer the HTTP parser's own errors with JSON."""

    async def _make_server(self) -> web.Server:
        server: Any = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server
