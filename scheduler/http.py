"""The HTTP face of a node: Luigi's wire protocol plus the routes an HA cluster needs.

This layer only translates. It parses Luigi's ``data=<json>`` argument, checks the arguments
against the RPC's signature, hands the call to the node and wraps the answer as
``{"response": ...}``. Every error is a JSON body naming the problem, never an HTML traceback:

* unknown method -> 404; malformed JSON or arguments that do not fit the method -> 400;
  body over the limit -> 413;
* this node is not the leader (or just lost the lease) -> 503 with ``Retry-After`` and the
  leader's id: Luigi's client retries any status >= 400, and a 503 means "not applied".

Routes: ``/api/<method>``, ``/leader``, ``/replica``, ``/healthz``, ``/status``, ``/switchover`` (POST), ``/audit``,
``/metrics``, ``/`` (redirect to the visualiser), ``/static/...`` (Luigi's own visualiser files,
served from the installed ``luigi`` package).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import KeysView, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from scheduler import audit
from scheduler.core import RPC_METHODS, Scheduler
from scheduler.core.errors import InvalidArgument
from scheduler.http_input import BadInput, decode_data
from scheduler.node import Node, NotLeader, RequestFailed
from scheduler.static_files import static_handler

NODE_KEY = web.AppKey("node", Node)
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
AUTH_ON_KEY = web.AppKey("authentication", bool)
RETRY_AFTER_SECONDS = "1"

# Signatures are read once from the core; binding against them is how we reject a request whose
# arguments do not fit with a 400 before it reaches the core.
_SIGNATURES = {name: inspect.signature(getattr(Scheduler, name)) for name in RPC_METHODS}


@dataclass(frozen=True)
class _Fit:
    """What keyword arguments a method takes, for a check far cheaper than ``Signature.bind``."""

    accepted: frozenset[str]
    required: frozenset[str]
    any_other: bool  # the method also takes **kwargs

    @classmethod
    def of(cls, signature: inspect.Signature) -> _Fit | None:
        params = list(signature.parameters.values())[1:]  # without self
        if any(p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) for p in params):
            return None  # only binding can tell
        named = [p for p in params if p.kind is not p.VAR_KEYWORD]
        return cls(
            frozenset(p.name for p in named),
            frozenset(p.name for p in named if p.default is p.empty),
            any_other=len(named) < len(params),
        )

    def admits(self, names: KeysView[str]) -> bool:
        return self.required <= names and "self" not in names and (self.any_other or names <= self.accepted)


# Signature.bind still runs for every request that does not pass the quick check, so the 400
# names the problem in Python's own words.
_FITS = {name: _Fit.of(signature) for name, signature in _SIGNATURES.items()}


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    body = {"error": message, "status": status, **extra}
    return web.json_response(body, status=status)


def _json_dumps(value: Any) -> str:
    # allow_nan: Luigi's own client speaks Python's JSON dialect, Infinity included.
    return json.dumps(value, allow_nan=True, default=str)


async def _read_arguments(request: web.Request) -> dict[str, Any]:
    """Luigi sends one field, ``data``, in the query (GET) or form body (POST); body wins.

    A missing or empty ``data`` means no arguments: the visualiser sends ``data=`` for pause and
    unpause, which luigid rejects with a 500.
    """
    raw = request.query.get("data")
    if request.method == "POST" and request.can_read_body:
        try:
            form = await request.post()
        except LookupError:
            raise _bad_request(f"unknown charset {request.charset!r} in Content-Type") from None
        except UnicodeDecodeError as exc:
            raise _bad_request(f"the form body is not valid {exc.encoding} text") from None
        except ValueError as exc:  # aiohttp's form parser: a multipart body without a boundary, ...
            raise _bad_request(f"the form body cannot be read: {exc}") from None
        if "data" in form:
            value = form["data"]
            raw = value if isinstance(value, str) else None
    try:
        return decode_data(raw)
    except BadInput as exc:
        raise _bad_request(str(exc)) from None


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=_json_dumps({"error": message, "status": 400}), content_type="application/json")


def _bind(method: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Check the arguments against the RPC's signature; raise a 400 that names what is wrong."""
    fit = _FITS[method]
    if fit is not None and fit.admits(arguments.keys()):
        return arguments
    try:
        _SIGNATURES[method].bind(None, **arguments)
    except TypeError as exc:
        raise web.HTTPBadRequest(
            text=_json_dumps({"error": f"{method}: {exc}", "status": 400}), content_type="application/json"
        ) from None
    return arguments


async def api(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    method = request.match_info["method"]
    if method not in RPC_METHODS:
        return json_error(404, f"unknown method {method!r}")
    started = time.perf_counter()
    code = 200
    try:
        arguments = _bind(method, await _read_arguments(request))
        if method in STREAMED_READS:
            return await _listing(request, node, STREAMED_READS[method], arguments)
        result = await node.call(method, arguments, audit=audit.record(request, method, arguments))
        return web.Response(text=_json_dumps({"response": result}), content_type="application/json")
    except web.HTTPException as exc:
        code = exc.status
        raise
    except NotLeader as exc:
        code = 503
        response = json_error(503, str(exc), leader=exc.leader, node_id=node.node_id)
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    except RequestFailed as exc:
        code = 500
        return json_error(500, str(exc))
    except InvalidArgument as exc:  # the request named bad values; the core changed nothing
        code = 400
        return json_error(400, str(exc))
    finally:
        node.metrics.observe_rpc(method, time.perf_counter() - started)
        if code != 200:
            node.metrics.rpc_errors.labels(method=method, code=str(code)).inc()


#: Reads whose answer can be the whole state: the core builds their JSON in pieces
#: (``Scheduler.task_list_chunks``), so one big listing never holds the event loop for long.
STREAMED_READS = {"task_list": "task_list_chunks"}


async def _listing(request: web.Request, node: Node, method: str, arguments: dict[str, Any]) -> web.StreamResponse:
    """Build a listing's reply piece by piece, letting the loop serve other requests in between.

    Requests served between pieces may change tasks not yet listed; the reply goes out only
    after a zero-effect read (``status_counts``) through ``node.call`` has waited, as every
    read does, for whatever it may have seen to be committed. It is sent in pieces too (HTTP
    chunked encoding): joining and encoding tens of megabytes at once would stall the loop.
    """
    pieces = await node.call(method, arguments)
    parts = [b'{"response":']
    for piece in pieces:
        if piece:
            parts.append(piece.encode())
        await asyncio.sleep(0)
    parts.append(b"}")
    await node.call("status_counts", {})
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    batch: list[bytes] = []
    size = 0
    for part in parts:
        batch.append(part)
        size += len(part)
        if size >= _WRITE_BYTES:
            await response.write(b"".join(batch))
            batch, size = [], 0
    if batch:
        await response.write(b"".join(batch))
    await response.write_eof()
    return response


#: Bytes per write of a streamed listing (each write copies them once).
_WRITE_BYTES = 256 * 1024


async def leader(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    leading = node.is_leader  # read once: the status code and the body must agree
    body = {"node_id": node.node_id, "leader": leading, "role": node.role.value, "leader_id": node.leader_hint()}
    if request.method == "HEAD":
        return web.Response(status=200 if leading else 503)
    return web.json_response(body, status=200 if leading else 503)


async def replica(request: web.Request) -> web.Response:
    """200 while this node is a following standby whose read copy is within ``replica_max_lag``.

    HAProxy's health check for the read backend: a leader, a plain standby and a follower that
    fell behind all answer 503, so reads go to a caught-up standby or else to the leader.
    """
    node = request.app[NODE_KEY]
    ready = node.replica_ready()  # read once: the status code and the body must agree
    lag = node.replica_lag()
    body = {
        "node_id": node.node_id,
        "ready": ready,
        "role": node.role.value,
        "lag_seconds": None if lag is None or lag == float("inf") else round(lag, 3),
        "max_lag_seconds": node.replica_max_lag,
        "leader_id": node.leader_hint(),
    }
    if request.method == "HEAD":
        return web.Response(status=200 if ready else 503)
    return web.json_response(body, status=200 if ready else 503)


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    ok = node.db_reachable
    body = {"ok": ok, "node_id": node.node_id, "role": node.status()["role"], "database_reachable": ok}
    return web.json_response(body, status=200 if ok else 503)


async def status(request: web.Request) -> web.Response:
    body = {**request.app[NODE_KEY].status(), "authentication": "on" if request.app[AUTH_ON_KEY] else "off"}
    return web.json_response(body, dumps=_json_dumps)


async def switchover(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    if not await node.switchover(audit=audit.record(request, "switchover", {})):
        return json_error(409, "this node is not the leader; send the switchover to the leader",
                          leader=node.leader_hint())
    return web.json_response({"released": True, "node_id": node.node_id})


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[NODE_KEY].metrics.exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def root(request: web.Request) -> web.Response:
    if request.method == "HEAD":
        return web.Response(status=204)
    # Relative on purpose (as luigid does) so the UI works behind a reverse-proxy prefix.
    raise web.HTTPFound("static/visualiser/index.html")


async def task_history(request: web.Request) -> web.Response:
    """A task's status changes as JSON (luigid's path; luigid renders an HTML page there)."""
    task_id = request.match_info["task_id"]
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        return json_error(400, "limit must be an integer")
    events = await request.app[NODE_KEY].task_events(task_id, max(1, min(limit, 10_000)))
    return web.json_response({"task_id": task_id, "events": events})


async def audit_trail(request: web.Request) -> web.Response:
    return await audit.audit_trail(request, request.app[NODE_KEY])


async def history(request: web.Request) -> web.Response:
    return json_error(404, "luigid's HTML history pages are not served; use /history/by_task_id/<task_id> (JSON)")


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn aiohttp's own errors (404, 405, 413...) and anything unexpected into JSON bodies."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BODY_KEY]
        return json_error(413, f"request body too large: the limit is {limit} bytes ([server] max_body_bytes)")
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return json_error(exc.status, exc.reason)
    except Exception:
        request.app[NODE_KEY].log.exception("http_handler_failed", path=request.path)
        return json_error(500, "internal error; see the node's log")


def build_app(node: Node, *, max_body_bytes: int, guards: Sequence[Any] = ()) -> web.Application:
    """The node's routes; ``guards`` are middlewares (authentication, CSRF) run inside the JSON errors."""
    app = web.Application(middlewares=[json_errors, *guards], client_max_size=max_body_bytes)
    app[NODE_KEY] = node
    app[MAX_BODY_KEY] = max_body_bytes
    app[AUTH_ON_KEY] = bool(guards)
    app.router.add_route("GET", "/api/{method}", api)
    app.router.add_route("POST", "/api/{method}", api)
    for verb in ("GET", "HEAD", "OPTIONS"):
        app.router.add_route(verb, "/leader", leader)
        app.router.add_route(verb, "/replica", replica)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    app.router.add_post("/switchover", switchover)
    app.router.add_get("/audit", audit_trail)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("GET", "/", root)
    app.router.add_route("HEAD", "/", root)
    app.router.add_get("/history/by_task_id/{task_id}", task_history)
    app.router.add_get("/history{tail:.*}", history)
    app.router.add_get("/static/{path:.*}", static_handler())
    return app
