"""The systemd notify protocol (``sd_notify``): readiness, status and watchdog keep-alives.

Only a datagram to ``$NOTIFY_SOCKET``; outside systemd the variable is unset and every call is a
no-op, so the same code runs on a laptop and under ``Type=notify`` units.
"""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> bool:
    """Send ``KEY=VALUE`` lines to systemd; return True when a notify socket was there."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half of ``WatchdogSec`` in seconds (the recommended keep-alive period), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
