"""No cross-site writes: a web page a logged-in operator visits must not change the scheduler.

A browser sends the Basic credentials it has cached for the node with any request to it,
including the ones another site's page makes (an ``<img>``, a form posted by script). So, when
authentication is on, every request that can change state (any RPC that is not a read, and
``/switchover``) must be one such a page cannot make:

* a POST, which Luigi's client always sends (form data, no ``Origin``); or a GET marked
  ``Sec-Fetch-Site: same-origin`` by the browser, which is how Luigi's own visualiser, served
  by this node, sends its pause and forgive buttons;
* and never one a browser marks as coming from elsewhere: ``Sec-Fetch-Site`` ``cross-site`` or
  ``same-site``, or an ``Origin`` whose host is not the one the request was sent to.

Clients that are not browsers send neither header and are not affected.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from scheduler.auth import RPC_ACCESS

_FOREIGN_FETCH = frozenset({"cross-site", "same-site"})


def changes_state(path: str) -> bool:
    if path.startswith("/api/"):
        return RPC_ACCESS.get(path[5:], "read") != "read"
    return path == "/switchover"


def _refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def same_origin_writes(request: web.Request, handler: Any) -> web.StreamResponse:
    if not changes_state(request.path):
        return await handler(request)
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site in _FOREIGN_FETCH:
        return _refuse(403, f"a state change from another site's page is refused (Sec-Fetch-Site: {fetch_site})")
    origin = request.headers.get("Origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != request.host.lower()):
        return _refuse(403, f"a state change from another origin is refused (Origin: {origin[:100]})")
    if request.method != "POST" and fetch_site != "same-origin":
        return _refuse(405, f"{request.path} changes state: send it by POST (Luigi's client does)")
    return await handler(request)
