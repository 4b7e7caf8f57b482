"""A client polling a URL from its own network namespace, one line per request on stdout.

``python vip_client.py URL [interval]`` prints ``<sent> <done> <status|ERR> <node|error>`` with
monotonic timestamps (CLOCK_MONOTONIC is system-wide, so the test can compare them with its own).
Each request opens a new connection, as a Luigi worker does through HAProxy's `option httpclose`.
Runs until it gets SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.error
import urllib.request

_running = True


def _stop(*_: object) -> None:
    global _running
    _running = False


def main() -> None:
    url = sys.argv[1]
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.02
    signal.signal(signal.SIGTERM, _stop)
    while _running:
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=0.5) as resp:
                status, node = resp.status, json.loads(resp.read()).get("node", "-")
        except urllib.error.HTTPError as exc:
            status, node = exc.code, "-"
        except Exception as exc:  # noqa: BLE001 - every failure is a data point
            status, node = "ERR", type(exc).__name__
        sys.stdout.write(f"{sent:.6f} {time.monotonic():.6f} {status} {node}\n")
        sys.stdout.flush()
        time.sleep(interval)


if __name__ == "__main__":
    main()
