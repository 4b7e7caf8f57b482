"""Who may do what: HTTP Basic authentication and the three roles, as aiohttp middleware.

Roles, each with the rights of the one before:

* ``viewer``: Luigi's visualiser, the read RPCs, ``/status``, ``/metrics``, ``/history``;
* ``worker``: every RPC a Luigi worker makes;
* ``operator``: everything, the admin RPCs and ``POST /switchover`` included.

``/leader`` and ``/healthz`` stay open: HAProxy's and systemd's checks carry no credentials and
learn nothing from them but a role and reachability.

Luigi's client sends the user and password of its scheduler URL as HTTP Basic on every RPC, so a
worker pays for bcrypt once (concurrent first requests wait for one check): a verified
``Authorization`` header is cached, keyed by a keyed
hash (HMAC with a per-process random key) of the header, so neither the password nor an
unkeyed fast hash of it is kept in memory. A wrong one is cached for a short while too, so a
worker retrying with a stale password does not cost a bcrypt per retry either.

Failed logins are counted (``luigi_ha_auth_failures_total``), logged with the remote address and
the user name (never the password), and slow the source down: each new unverified credential
from an address that failed recently waits up to :data:`MAX_DELAY` seconds before bcrypt runs.
Credentials already verified never wait, so a worker on a host where someone mistyped a
password is never locked out. bcrypt itself runs in a thread, at most two at a time, so a flood
of guesses never stalls the event loop that answers every other RPC.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import bcrypt
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from scheduler.users import User

REALM = 'Basic realm="luigi-ha"'

#: Every RPC of Luigi's protocol, by the kind of access it needs. One table, checked against
#: ``luigi.scheduler.RPC_METHODS`` and the core's by a test: a new RPC cannot slip in unclassified.
RPC_ACCESS: Mapping[str, str] = {
    # read: what the visualiser and monitoring ask; changes nothing
    "task_list": "read", "task_search": "read", "dep_graph": "read", "inverse_dep_graph": "read",
    "graph": "read", "worker_list": "read", "resource_list": "read", "is_paused": "read",
    "is_pause_enabled": "read", "has_task_history": "read", "fetch_error": "read",
    "get_task_status_message": "read", "get_task_progress_percentage": "read",
    "get_running_task_resources": "read", "get_scheduler_message_response": "read", "count_pending": "read",
    # worker: what a Luigi worker sends while it schedules and runs tasks
    "add_task": "worker", "add_worker": "worker", "get_work": "worker", "ping": "worker",
    "add_task_batcher": "worker", "announce_scheduling_failure": "worker",
    "set_task_status_message": "worker", "set_task_progress_percentage": "worker",
    "decrease_running_task_resources": "worker", "report_task_statistics": "worker",
    "add_scheduler_message_response": "worker", "update_metrics_task_started": "worker",
    # admin: what an operator does to the scheduler or to other people's tasks
    "forgive_failures": "admin", "mark_as_done": "admin", "re_enable_task": "admin",
    "disable_worker": "admin", "set_worker_processes": "admin", "pause": "admin", "unpause": "admin",
    "send_scheduler_message": "admin", "prune": "admin", "update_resource": "admin",
    "update_resources": "admin",
}
ROLE_FOR_ACCESS = {"read": "viewer", "worker": "worker", "admin": "operator"}
_RANK = {"viewer": 0, "worker": 1, "operator": 2}

PUBLIC_PATHS = frozenset({"/leader", "/replica", "/healthz"})
OPERATOR_PATHS = frozenset({"/switchover", "/audit"})

USER_KEY = "luigi_ha.user"  # request[USER_KEY]: the authenticated User, for the audit trail

MAX_DELAY = 2.0
_FAILURE_MEMORY = 60.0  # seconds a failed login keeps slowing its source
_NEGATIVE_TTL = 10.0
_CACHE_SIZE = 4096


def required_role(path: str) -> str | None:
    """The least role that may request ``path`` (None: anyone)."""
    if path in PUBLIC_PATHS:
        return None
    if path.startswith("/api/"):
        return ROLE_FOR_ACCESS[RPC_ACCESS.get(path[5:], "read")]
    if path in OPERATOR_PATHS:
        return "operator"
    return "viewer"


def has_role(user: User, role: str) -> bool:
    return _RANK[user.role] >= _RANK[role]


def unauthorized(message: str) -> web.Response:
    response = web.json_response({"error": message, "status": 401}, status=401)
    response.headers["WWW-Authenticate"] = REALM
    return response


class _Throttle:
    """Recent failed logins per source address, decaying: how long its next guess must wait."""

    def __init__(self, max_sources: int = 10_000) -> None:
        self._failures: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_sources

    def _score(self, source: str, now: float) -> float:
        score, at = self._failures.get(source, (0.0, now))
        return score * max(0.0, 1.0 - (now - at) / _FAILURE_MEMORY)

    def delay(self, source: str) -> float:
        score = self._score(source, time.monotonic())
        return 0.0 if score < 0.5 else min(MAX_DELAY, 0.05 * 2 ** min(score, 10.0))

    def failed(self, source: str) -> None:
        now = time.monotonic()
        self._failures[source] = (self._score(source, now) + 1.0, now)
        self._failures.move_to_end(source)
        while len(self._failures) > self._max:
            self._failures.popitem(last=False)


class Authenticator:
    """Checks each request's HTTP Basic credentials and role; install :meth:`middleware`."""

    def __init__(self, users: Mapping[str, User], *, registry: CollectorRegistry | None = None,
                 log: Any = None) -> None:
        self._users = dict(users)
        self._key = os.urandom(32)
        self._cache: OrderedDict[bytes, tuple[User | None, float]] = OrderedDict()
        self._throttle = _Throttle()
        self._verifying: dict[bytes, asyncio.Future[User | None]] = {}
        self._bcrypt_slots = asyncio.Semaphore(2)
        # Checked against when the name is unknown, so an unknown name takes as long as a wrong password.
        self._dummy = User("", "viewer", bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(12)))
        self._log = log
        self.failures = Counter("luigi_ha_auth_failures", "Requests refused for missing or wrong credentials",
                                ["reason"], registry=registry)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        role = required_role(request.path)
        if role is None:
            return await handler(request)
        user = await self.authenticate(request)
        if user is None:
            return unauthorized("authentication required: HTTP Basic credentials of a luigi-ha user")
        if not has_role(user, role):
            what = request.path[5:] if request.path.startswith("/api/") else f"{request.method} {request.path}"
            return web.json_response(
                {"error": f"{what} needs the role {role}; user {user.name!r} has the role {user.role}",
                 "status": 403, "required_role": role}, status=403)
        request[USER_KEY] = user
        return await handler(request)

    async def authenticate(self, request: web.Request) -> User | None:
        header = request.headers.get("Authorization", "")
        if not header:
            self.failures.labels(reason="missing").inc()
            return None
        key = hmac.new(self._key, header.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and (cached[0] is not None or cached[1] > now):
            if cached[0] is None:
                self.failures.labels(reason="wrong").inc()  # logged when it was verified
            return cached[0]
        pending = self._verifying.get(key)
        if pending is not None:  # the same credentials arrived on several connections at once
            return await asyncio.shield(pending)
        task = asyncio.ensure_future(self._verify(request, header, key, now))
        self._verifying[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._verifying.pop(key, None)
            else:
                task.add_done_callback(lambda _: self._verifying.pop(key, None))

    async def _verify(self, request: web.Request, header: str, key: bytes, now: float) -> User | None:
        name, password = _parse_basic(header)
        if name is None:
            self._refused(request, "", "malformed")
            return None
        source = request.remote or "unknown"
        delay = self._throttle.delay(source)
        if delay:
            await asyncio.sleep(delay)
        user = self._users.get(name)
        async with self._bcrypt_slots:
            ok = await asyncio.to_thread((user or self._dummy).verify, password)
        verified = user if ok and user is not None else None
        self._cache[key] = (verified, now + _NEGATIVE_TTL)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        if verified is None:
            self._throttle.failed(source)
            self._refused(request, name, "wrong")
        return verified

    def _refused(self, request: web.Request, name: str, reason: str) -> None:
        self.failures.labels(reason=reason).inc()
        if self._log is not None:
            self._log.warning("login_failed", remote=request.remote, user=name[:80], reason=reason,
                              path=request.path)


def _parse_basic(header: str) -> tuple[str | None, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None, ""
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else (None, "")
