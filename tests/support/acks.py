"""A client that writes continuously to a cluster and remembers every acknowledged write.

This is the referee of the failover drills: it sends ``add_task`` RPCs with unique task ids to
whichever node accepts them (trying each node in turn on 503 or a refused connection, as HAProxy
would), and records for each acknowledged id which node answered and when. After the drill, every
acknowledged id must be in the leader's state; the gap between a kill and the first acknowledged
write afterwards is the client-visible failover time.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import requests


@dataclass
class Ack:
    task_id: str
    node_url: str
    at: float  # time.monotonic() when the 200 arrived


@dataclass(eq=False)  # a thread: identity, not value, equality (and hashable)
class AckingWriter(threading.Thread):
    urls: list[str]
    prefix: str = "Ack"
    pause: float = 0.0
    acks: list[Ack] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self._stop_event = threading.Event()
        self._session = requests.Session()
        self._n = 0

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    def run(self) -> None:
        start = 0
        while not self._stop_event.is_set():
            task_id = f"{self.prefix}_{self._n}"
            payload = {"task_id": task_id, "worker": f"{self.prefix}-writer", "status": "PENDING",
                       "runnable": False, "family": self.prefix, "params": {"n": str(self._n)}}
            for i in range(len(self.urls)):
                url = self.urls[(start + i) % len(self.urls)]
                try:
                    r = self._session.post(f"{url}/api/add_task", data={"data": json.dumps(payload)}, timeout=3)
                except requests.RequestException:
                    self.errors += 1
                    continue
                if r.status_code == 200:
                    self.acks.append(Ack(task_id, url, time.monotonic()))
                    self._n += 1
                    start = (start + i) % len(self.urls)
                    break
                self.errors += 1
            else:
                time.sleep(0.02)
            if self.pause:
                time.sleep(self.pause)

    def first_ack_after(self, moment: float) -> float | None:
        for ack in self.acks:
            if ack.at > moment:
                return ack.at
        return None


def leader_task_ids(url: str, prefix: str) -> set[str]:
    """Every task id starting with ``prefix`` in the state of the node at ``url``."""
    r = requests.get(f"{url}/api/task_search", params={"data": json.dumps({"task_str": prefix + "_"})}, timeout=30)
    r.raise_for_status()
    found: set[str] = set()
    for tasks in r.json()["response"].values():
        found.update(tasks)
    return found


class LeaderSampler(threading.Thread):
    """Samples every node's ``/leader`` and records the largest number of 200s seen at once."""

    def __init__(self, urls: list[str], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.interval = interval
        self.max_leaders = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def _pass(self, session: requests.Session) -> set[str]:
        leaders = set()
        for url in self.urls:
            try:
                if session.get(url + "/leader", timeout=0.5).status_code == 200:
                    leaders.add(url)
            except requests.RequestException:
                pass
        return leaders

    def run(self) -> None:
        # Nodes are polled one after another, so a clean handover can look like two leaders in a
        # single pass (old one sampled just before it released, new one just after it took over).
        # Two leaders count only when two consecutive passes both see them: then their
        # leadership intervals really overlapped.
        session = requests.Session()
        previous: set[str] = set()
        while not self._stop_event.is_set():
            current = self._pass(session)
            confirmed = current & previous if len(current) > 1 else current
            self.max_leaders = max(self.max_leaders, len(confirmed))
            previous = current
            self.samples += 1
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
