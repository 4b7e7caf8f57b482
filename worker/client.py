"""A failover-proof Luigi scheduler client: ``luigi.rpc.RemoteScheduler`` with HA retries.

Luigi's own client tries an RPC 3 times 30 s apart and then kills the worker (exit code 4). A
luigi-ha failover takes about ``lease_ttl`` seconds after a crash and well under a second after a
switchover, so :class:`HARemoteScheduler` changes only how one HTTP call is *fetched*:

* a failed call is retried with exponential backoff and full jitter
  (``tenacity.wait_random_exponential``) until a total time budget is spent (default 120 s,
  comfortably above a failover), instead of a fixed number of attempts;
* only what a failover produces is retried: connection errors (refused, reset, dropped),
  timeouts, and HTTP 503 (a standby, or a leader stepping down: the request was NOT applied) plus
  502/504 from a proxy in between. Any other status fails at once: a 4xx is a bug in the caller
  or the pipeline and retrying cannot fix it, and the exception carries the server's JSON
  ``error`` message;
* several scheduler URLs may be given (client-side failover when there is no VIP): the client
  sticks to the URL that last answered and moves to the next one on a connection error, a
  timeout or a 502/503/504;
* ``ping`` (sent by Luigi's keep-alive thread while it holds Luigi's fork lock) gets a short
  budget of its own, because its failures are only logged and a long retry would delay the start
  of new task processes;
* every failed attempt is logged (``rpc_retry``) and, when ``$LUIGI_HA_RPC_RETRY_LOG`` names a
  file, appended to it as one JSON line, so a drill can count what the workers saw.

Everything else is Luigi's: the RPC stubs, the argument encoding, ``_request``'s handling of
``{"response": null}`` (``get_work`` asks again, up to 3 times), the ``requests`` session that is
re-created after a fork.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import requests
import structlog
from luigi.rpc import RemoteScheduler, RequestsFetcher, RPCError, _urljoin
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from scheduler.credentials import Auth, resolve

logger = structlog.get_logger("luigi_ha.worker.client")

#: Environment variable naming a file that gets one JSON line per failed (and retried) attempt.
RETRY_LOG_ENV = "LUIGI_HA_RPC_RETRY_LOG"

#: Statuses that mean "not applied, try again (maybe elsewhere)".
DEFAULT_RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how an RPC is retried. All times in seconds."""

    budget: float = 120.0  # no new attempt starts after this long since the first one
    ping_budget: float = 5.0  # the keep-alive ping's own, short budget
    connect_timeout: float = 3.0  # TCP connect (a dead host without RST costs this much)
    read_timeout: float = 10.0  # waiting for the reply (Luigi's rpc_connect_timeout)
    backoff_initial: float = 0.1  # exponential backoff with full jitter: uniform(0, min(max, initial * 2**n))
    backoff_max: float = 2.0
    retry_statuses: frozenset[int] = field(default=DEFAULT_RETRY_STATUSES)

    def __post_init__(self) -> None:
        for name in ("budget", "ping_budget", "connect_timeout", "read_timeout", "backoff_initial", "backoff_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.connect_timeout == 0 or self.read_timeout == 0:
            raise ValueError("timeouts must be positive")


class RetryableFailure(Exception):
    """One attempt failed in a way a failover explains (the request was not applied, or may be re-sent)."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class SchedulerRejected(RPCError):
    """The scheduler answered with a status that retrying cannot fix (a 4xx, a 500).

    ``status`` is the HTTP status and ``server_message`` the ``error`` field of the server's JSON
    body (or the start of the body when it was not JSON).
    """

    def __init__(self, method: str, url: str, status: int, server_message: str) -> None:
        super().__init__(f"scheduler {url} rejected {method} with HTTP {status}: {server_message}")
        self.method = method
        self.url = url
        self.status = status
        self.server_message = server_message


class SchedulerUnavailable(RPCError):
    """No scheduler URL accepted the call within the retry budget."""


def _server_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason or ""
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return json.dumps(body)[:500]


class _Fetcher(RequestsFetcher):
    """Luigi's requests fetcher (session per process), returning the response instead of raising.

    The credentials are passed per call, not set on the session: ``check_pid`` replaces the
    session in a forked task process. Without any, requests looks in ``~/.netrc``.
    """

    def __init__(self, auth: Auth | None = None) -> None:
        super().__init__()
        self.auth = auth

    def fetch_response(self, full_url: str, body: dict[str, str], timeout: tuple[float, float]) -> requests.Response:
        self.check_pid()
        return self.session.post(full_url, data=body, timeout=timeout, auth=self.auth)


class HARemoteScheduler(RemoteScheduler):
    """``luigi.rpc.RemoteScheduler`` that rides through scheduler failovers (see the module doc)."""

    def __init__(self, urls: str | Sequence[str], policy: RetryPolicy | None = None,
                 retry_log: str | None = None, auth: Auth | None = None) -> None:
        if isinstance(urls, str):
            urls = [urls]
        # Credentials in a URL move to the fetcher, so no URL this client logs or reports holds one.
        cleaned, in_urls = resolve([u.strip().rstrip("/") for u in urls if u and u.strip()], environ={})
        if not cleaned:
            raise ValueError("at least one scheduler URL is needed")
        super().__init__(cleaned[0], connect_timeout=(policy or RetryPolicy()).read_timeout)
        self._urls = cleaned
        self._current = 0
        self._lock = threading.Lock()
        self.policy = policy or RetryPolicy()
        self._fetcher = _Fetcher(auth or in_urls)
        self._retry_log = retry_log if retry_log is not None else os.environ.get(RETRY_LOG_ENV) or None
        self.retries = 0  # failed attempts that were retried, in this process

    # -- URL rotation ---------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return list(self._urls)

    @property
    def current_url(self) -> str:
        return self._urls[self._current]

    def _advance(self, failed_url: str) -> None:
        """Move on from ``failed_url`` (unless another thread already did)."""
        with self._lock:
            if self._urls[self._current] == failed_url and len(self._urls) > 1:
                self._current = (self._current + 1) % len(self._urls)
                self._url = self._urls[self._current]

    # -- one attempt ----------------------------------------------------------------------------

    def _attempt(self, url_suffix: str, body: dict[str, str]) -> str:
        base = self.current_url
        full_url = _urljoin(base, url_suffix)
        method = url_suffix.rsplit("/", 1)[-1]
        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        try:
            response = self._fetcher.fetch_response(full_url, body, timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            self._advance(base)
            raise RetryableFailure(f"{type(exc).__name__}: {exc}", url=base) from exc
        if response.status_code == 200:
            return response.text
        message = _server_message(response)
        if response.status_code in self.policy.retry_statuses:
            self._advance(base)
            raise RetryableFailure(f"HTTP {response.status_code}: {message}", url=base, status=response.status_code)
        raise SchedulerRejected(method, base, response.status_code, message)

    # -- the retry loop (replaces luigi's fixed 3 x 30 s) ---------------------------------------

    def _log_retry(self, method: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        self.retries += 1
        url = getattr(exc, "url", self.current_url)
        status = getattr(exc, "status", None)
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning("rpc_retry", method=method, url=url, status=status, attempt=state.attempt_number,
                       error=str(exc)[:300], next_url=self.current_url, wait=round(wait, 3))
        if self._retry_log:
            line = json.dumps({
                "t": time.time(), "pid": os.getpid(), "method": method, "url": url, "status": status,
                "attempt": state.attempt_number, "error": str(exc)[:300], "next_url": self.current_url,
            })
            try:
                with open(self._retry_log, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            except OSError:
                logger.exception("rpc_retry_log_unwritable", path=self._retry_log)

    def _fetch(self, url_suffix: str, body: dict[str, str]) -> str:
        method = url_suffix.rsplit("/", 1)[-1]
        budget = self.policy.ping_budget if method == "ping" else self.policy.budget
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, RetryableFailure)),
            wait=wait_random_exponential(multiplier=self.policy.backoff_initial, max=self.policy.backoff_max),
            stop=stop_after_delay(budget),
            before_sleep=lambda state: self._log_retry(method, state),
            reraise=True,
        )
        started = time.monotonic()
        try:
            return retrying(self._attempt, url_suffix, body)
        except RetryableFailure as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise SchedulerUnavailable(
                f"{method}: no scheduler accepted the call in {time.monotonic() - started:.1f}s "
                f"({attempts} attempts, budget {budget:g}s, urls {', '.join(self._urls)}); last error: {exc}",
                exc,
            ) from exc


def parse_urls(values: Iterable[str] | str | None) -> list[str]:
    """Scheduler URLs from flags or a config value: repeated, comma- or whitespace-separated."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    urls: list[str] = []
    for value in values:
        for part in value.replace(",", " ").split():
            if part not in urls:
                urls.append(part)
    return urls
