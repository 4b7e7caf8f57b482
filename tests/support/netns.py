"""A host behind a veth pair in its own network namespace, whose link can be made silent.

"Silent" is what a crashed VM or a pulled cable looks like to a client: packets go out and
nothing comes back, no RST, no ICMP. Both ends of the veth get a ``pfifo`` queue of length 0,
which drops every packet (netem and tc actions are not always built into the kernel; a zero-length
FIFO always is). Needs root and iproute2; :func:`netns_unavailable_reason` says why not.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

_seq = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def netns_unavailable_reason() -> str | None:
    """Why a namespace with a silenceable link cannot be made here, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    probe = SilentableHost()
    try:
        probe.create()
        probe.silence()
    except subprocess.CalledProcessError as exc:
        return f"cannot build a namespace with a silenceable link: {exc.stderr.strip()}"
    finally:
        probe.destroy()
    return None


class SilentableHost:
    """Namespace ``ns`` reachable from here at :attr:`inside` over a veth pair (a /30 of 10.231.x)."""

    def __init__(self) -> None:
        n = next(_seq)
        tag = f"{os.getpid() % 100000}x{n}"
        self.ns = f"lhdb{tag}"
        self.outer_dev = f"lho{tag}"[:15]
        self.inner_dev = f"lhi{tag}"[:15]
        block = (os.getpid() * 8 + n * 4) % 250 + 1
        self.outside = f"10.231.{block}.1"
        self.inside = f"10.231.{block}.2"
        self._created = False

    def create(self) -> SilentableHost:
        _ip("netns", "add", self.ns)
        self._created = True
        _ip("link", "add", self.outer_dev, "type", "veth", "peer", "name", self.inner_dev, "netns", self.ns)
        _ip("addr", "add", f"{self.outside}/30", "dev", self.outer_dev)
        _ip("link", "set", self.outer_dev, "up")
        _ip("-n", self.ns, "addr", "add", f"{self.inside}/30", "dev", self.inner_dev)
        _ip("-n", self.ns, "link", "set", self.inner_dev, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")
        return self

    def silence(self) -> None:
        """Drop every packet in both directions from now on."""
        subprocess.run(["tc", "qdisc", "replace", "dev", self.outer_dev, "root", "pfifo", "limit", "0"],
                       check=True, capture_output=True, text=True)
        subprocess.run(["ip", "netns", "exec", self.ns, "tc", "qdisc", "replace", "dev", self.inner_dev, "root",
                        "pfifo", "limit", "0"], check=True, capture_output=True, text=True)

    def restore(self) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", self.outer_dev, "root"], capture_output=True)
        subprocess.run(["ip", "netns", "exec", self.ns, "tc", "qdisc", "del", "dev", self.inner_dev, "root"],
                       capture_output=True)

    def destroy(self) -> None:
        if not self._created:
            return
        _ip("link", "del", self.outer_dev, check=False)
        _ip("netns", "del", self.ns, check=False)
        self._created = False
