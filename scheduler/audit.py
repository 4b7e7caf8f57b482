"""The audit trail: a durable record of every admin action and switchover.

Each record names who (the authenticated user and role; none when authentication is off), from
where (the peer address, and ``X-Forwarded-For`` as sent, since behind HAProxy the peer is the
balancer), what (the RPC or ``switchover`` and its arguments) and when. The node commits it in the
same fenced transaction as the change itself (scheduler/node.py), so there is no change without
its record and no record of a change that did not happen. Operators read it at ``GET /audit``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from scheduler.auth import RPC_ACCESS, USER_KEY

MAX_ARGUMENTS_CHARS = 4000


def record(request: web.Request, action: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
    """The audit record of ``action``, or None when it is not an admin action."""
    if action != "switchover" and RPC_ACCESS.get(action) != "admin":
        return None
    user = request.get(USER_KEY)
    remote = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        remote = f"{remote} (for {forwarded})"
    text = json.dumps(arguments, allow_nan=True, default=str, ensure_ascii=True)
    if len(text) > MAX_ARGUMENTS_CHARS:
        text = json.dumps({"truncated": text[:MAX_ARGUMENTS_CHARS]})
    return {
        "at": time.time(),
        "user": user.name[:128] if user is not None else None,
        "role": user.role if user is not None else None,
        "remote": remote[:255],
        "action": action,
        "arguments": text,
    }


async def audit_trail(request: web.Request, node: Any) -> web.Response:
    """``GET /audit?limit=N``: the newest N records (default 100), arguments decoded."""
    try:
        limit = max(1, min(int(request.query.get("limit", "100")), 10_000))
    except ValueError:
        return web.json_response({"error": "limit must be an integer", "status": 400}, status=400)
    rows = await node.audit_records(limit)
    for row in rows:
        row["arguments"] = json.loads(row["arguments"])
    return web.json_response({"records": rows})
