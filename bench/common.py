"""Shared plumbing for the benchmarks: start/stop luigid and luigi-ha nodes, RPC, statistics, output.

Every process here is started by us and ended by the PID we hold (never by name). Servers listen
on 127.0.0.1 only. Callers wrap their runs in ``try/finally`` and call ``Procs.stop_all()``.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment for a server or a luigi run: no LUIGI_HA_* overrides, an empty luigi config."""
    empty_cfg = workdir / "empty-luigi.cfg"
    if not empty_cfg.exists():
        empty_cfg.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI_HA_") and k != "LUIGI_CONFIG_PATH"}
    env["LUIGI_CONFIG_PATH"] = str(empty_cfg)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Procs:
    """The child processes one benchmark started; ``stop_all`` ends each by its own PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as fh:
            proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=fh, stderr=fh, start_new_session=True)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def wait_http(url: str, *, ok: Iterable[int] = (200, 204, 302), timeout: float = 60.0,
              proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Wait until ``url`` answers with one of ``ok`` (no redirects followed)."""
    deadline = time.monotonic() + timeout
    codes = set(ok)
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}\n{tail}")
        try:
            if requests.get(url, timeout=1, allow_redirects=False).status_code in codes:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def start_luigid(procs: Procs, workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """The stock luigid of the installed luigi package, isolated cwd, empty config, own state file."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-c", "from luigi.cmdline import luigid; luigid()", "--port", str(port),
            "--address", "127.0.0.1", "--state-path", str(workdir / "state.pickle")]
    log = workdir / "luigid.log"
    proc = procs.start(argv, cwd=workdir, env=clean_env(workdir), log=log)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", proc=proc, log=log)
    return url, proc


BENCH_USER = ("bench-worker", "bench-password")


def start_ha_node(procs: Procs, workdir: Path, db_url: str, node_id: str = "bench-a", *, auth: bool = False,
                  ) -> tuple[str, subprocess.Popen[bytes]]:
    """One luigi-ha node (``python -m scheduler.cli scheduler``) on ``db_url``; returns once it leads.

    With ``auth`` the node has ``[auth]`` on with one worker user (:data:`BENCH_USER`, bcrypt's
    default cost) and the URL returned carries its credentials, as a Luigi worker's would.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "scheduler.cli", "scheduler", "--db", db_url, "--host", "127.0.0.1",
            "--port", str(port), "--node-id", node_id]
    if auth:
        from scheduler.users import add_user

        add_user(workdir / "users", BENCH_USER[0], "worker", BENCH_USER[1])
        (workdir / "node.cfg").write_text(f"[auth]\nusers_file = {workdir / 'users'}\n")
        argv += ["--config", str(workdir / "node.cfg")]
    log = workdir / f"{node_id}.log"
    env = clean_env(workdir, PYTHONPATH=str(REPO))
    proc = procs.start(argv, cwd=REPO, env=env, log=log)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/leader", ok=(200,), proc=proc, log=log)
    if auth:
        url = f"http://{BENCH_USER[0]}:{BENCH_USER[1]}@127.0.0.1:{port}"
    return url, proc


class RpcError(RuntimeError):
    """A Luigi RPC answered with a status other than 200 (or not at all)."""


def form_body(payload: dict[str, Any]) -> str:
    """The body ``luigi.rpc`` posts: the arguments as JSON in the form field ``data``."""
    return urllib.parse.urlencode({"data": json.dumps(payload)})


def response_of(body: bytes) -> Any:
    """The ``response`` of Luigi's ``{"response": ...}`` envelope."""
    return json.loads(body)["response"]


class LeanClient:
    """Luigi's wire protocol over one keep-alive ``http.client`` connection.

    Sends exactly what ``luigi.rpc`` sends (POST ``/api/<method>``, form field ``data=<json>``)
    but without the ``requests`` library, which costs about 1 ms of client CPU per call on a
    2-CPU VM: five worker processes on ``requests`` would saturate the machine by themselves and
    measure the client instead of the scheduler. Reconnects once if the server closed the
    keep-alive connection.
    """

    HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        if parts.username is not None:  # HTTP Basic, as luigi.rpc sends the URL's user:password@
            token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
            self.HEADERS = {**self.HEADERS, "Authorization": f"Basic {token}"}

    def rpc(self, method: str, payload: dict[str, Any]) -> Any:
        body = form_body(payload)
        for attempt in (1, 2):
            try:
                self.conn.request("POST", f"/api/{method}", body=body, headers=self.HEADERS)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RpcError(f"{method}: HTTP {response.status}: {data[:200]!r}")
        return response_of(data)

    def close(self) -> None:
        self.conn.close()


class RequestsClient:
    """The same calls through ``requests``, as luigi's own RemoteScheduler makes them."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url, self.timeout, self.session = url, timeout, requests.Session()

    def rpc(self, method: str, payload: dict[str, Any]) -> Any:
        try:
            return rpc(self.session, self.url, method, payload, self.timeout)
        except requests.RequestException as exc:
            raise RpcError(f"{method}: {exc}") from exc

    def close(self) -> None:
        self.session.close()


class CurlClient:
    """The same calls through libcurl (``pycurl``): one keep-alive handle, HTTP done in C.

    A load generator that shares two CPUs with the scheduler under test takes its CPU from the
    scheduler. ``http.client`` builds and parses every message in Python; libcurl does that in C
    and leaves only the JSON and form encoding to Python. On the 2-CPU VM a call costs the client
    about 100 us of CPU against 150 us (``bench/client_cost.py``). The requests on the wire are
    the same: POST ``/api/<method>`` with the form field ``data=<json>``. libcurl reopens a
    keep-alive connection that the server closed by itself.
    """

    HEADERS = ["Content-Type: application/x-www-form-urlencoded", "Accept: application/json", "Expect:"]

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        try:
            import pycurl
        except ImportError as exc:
            raise SystemExit(
                "the curl client needs pycurl (bash scripts/setup-machine.sh installs it); "
                "or run with --client lean"
            ) from exc
        self._pycurl = pycurl
        self.url = url.rstrip("/")
        self._body = io.BytesIO()
        self._curl = pycurl.Curl()
        self._curl.setopt(pycurl.HTTPHEADER, self.HEADERS)
        self._curl.setopt(pycurl.TCP_NODELAY, 1)
        self._curl.setopt(pycurl.TIMEOUT_MS, int(timeout * 1000))
        self._curl.setopt(pycurl.WRITEDATA, self._body)

    def rpc(self, method: str, payload: dict[str, Any]) -> Any:
        pycurl, curl, body = self._pycurl, self._curl, self._body
        body.seek(0)
        body.truncate()
        curl.setopt(pycurl.URL, f"{self.url}/api/{method}")
        curl.setopt(pycurl.POSTFIELDS, form_body(payload))
        try:
            curl.perform()
        except pycurl.error as exc:
            raise RpcError(f"{method}: {exc}") from exc
        status = curl.getinfo(pycurl.RESPONSE_CODE)
        if status != 200:
            raise RpcError(f"{method}: HTTP {status}: {body.getvalue()[:200]!r}")
        return response_of(body.getvalue())

    def close(self) -> None:
        self._curl.close()


CLIENTS = {"curl": CurlClient, "lean": LeanClient, "requests": RequestsClient}


def make_client(kind: str, url: str, timeout: float = 120.0) -> CurlClient | LeanClient | RequestsClient:
    """``kind`` is ``curl`` (libcurl), ``lean`` (http.client) or ``requests`` (as luigi's own client)."""
    return CLIENTS[kind](url, timeout)


def rpc(session: requests.Session, url: str, method: str, payload: dict[str, Any], timeout: float = 120.0) -> Any:
    """One Luigi RPC exactly as luigi.rpc sends it: POST form field ``data=<json>``."""
    r = session.post(f"{url}/api/{method}", data={"data": json.dumps(payload)}, timeout=timeout)
    r.raise_for_status()
    return r.json()["response"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_counters(url: str) -> dict[str, float]:
    """A luigi-ha node's ``luigi_ha_*`` histogram sums and counts from ``/metrics`` (name -> value)."""
    out: dict[str, float] = {}
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("luigi_ha_") and ("_sum" in line or "_count" in line):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


# -- statistics and output ----------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no data."""
    if not values:
        return float("nan")
    data = sorted(values)
    k = max(0, min(len(data) - 1, math.ceil(p / 100 * len(data)) - 1))
    return data[k]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                  strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_line() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"machine: {os.cpu_count()} CPUs (shared), load average now {load}, Python {sys.version.split()[0]}, "
            f"luigi {_luigi_version()}, all traffic on 127.0.0.1")


def _luigi_version() -> str:
    try:
        from importlib.metadata import version

        return version("luigi")
    except Exception:  # pragma: no cover - informational only
        return "?"


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return float("nan")
    return a / b


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
