"""Luigi's visualiser files, served from the installed ``luigi`` package.

aiohttp's own static route decides "not found" only while sending the file, after every
middleware has run, and so answers a missing file with an empty ``application/octet-stream``
404. This handler looks the file up first, so a miss is the node's usual JSON 404 (and a path
that leaves the directory is the same 404: nothing outside it exists for a client).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import luigi
from aiohttp import web

LUIGI_STATIC = Path(luigi.__file__).resolve().parent / "static"


def static_handler(root: Path = LUIGI_STATIC) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A GET/HEAD handler for ``/static/{path}`` serving regular files under ``root`` only."""
    base = root.resolve()

    async def handler(request: web.Request) -> web.StreamResponse:
        relative = request.match_info.get("path", "")
        try:
            target = (base / relative).resolve()
        except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops
            target = None
        if target is None or not target.is_relative_to(base) or not target.is_file():
            body = {"error": f"no such file under /static: {relative[:200]!r}", "status": 404}
            raise web.HTTPNotFound(text=json.dumps(body), content_type="application/json")
        return web.FileResponse(target)

    return handler

