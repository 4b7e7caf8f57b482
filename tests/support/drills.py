"""Failover drills shared by the tests (which assert on them) and bench/ (which reports them)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from scheduler.localcluster import LocalCluster
from tests.support.acks import AckingWriter, LeaderSampler, leader_task_ids


@dataclass
class SoakResult:
    cycles: int
    failover_seconds: list[float] = field(default_factory=list)
    acked: int = 0
    lost: list[str] = field(default_factory=list)
    max_leaders_seen: int = 0
    leader_samples: int = 0

    def percentile(self, p: float) -> float:
        data = sorted(self.failover_seconds)
        if not data:
            return float("nan")
        k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
        return data[k]

    def summary(self) -> str:
        return (
            f"cycles={self.cycles} failover p50={self.percentile(50):.3f}s p99={self.percentile(99):.3f}s "
            f"max={max(self.failover_seconds, default=float('nan')):.3f}s "
            f"mean={statistics.fmean(self.failover_seconds) if self.failover_seconds else float('nan'):.3f}s "
            f"acked={self.acked} lost={len(self.lost)} max_leaders_at_once={self.max_leaders_seen} "
            f"leader_samples={self.leader_samples}"
        )


def kill_restart_soak(cluster: LocalCluster, cycles: int, prefix: str = "Soak", settle: float = 0.3) -> SoakResult:
    """Kill -9 the leader ``cycles`` times under a steady writer; restart each victim as a standby.

    The failover time of a cycle is from the SIGKILL to the first write the writer got
    acknowledged afterwards (by whichever node took over).
    """
    result = SoakResult(cycles=cycles)
    writer = AckingWriter(cluster.urls, prefix=prefix)
    sampler = LeaderSampler(cluster.urls)
    writer.start()
    sampler.start()
    try:
        for _ in range(cycles):
            leader = cluster.wait_for_leader(timeout=60)
            time.sleep(settle)  # let some writes land on this leader
            killed_at = time.monotonic()
            leader.kill()
            deadline = killed_at + 60
            while time.monotonic() < deadline and writer.first_ack_after(killed_at) is None:
                time.sleep(0.01)
            first = writer.first_ack_after(killed_at)
            if first is None:
                raise AssertionError("no write was acknowledged within 60 s of killing the leader")
            result.failover_seconds.append(first - killed_at)
            leader.start()
        time.sleep(settle)
    finally:
        writer.stop()
        sampler.stop()
    final = cluster.wait_for_leader(timeout=60)
    acked = {ack.task_id for ack in writer.acks}
    present = leader_task_ids(final.url, prefix)
    result.acked = len(acked)
    result.lost = sorted(acked - present)
    result.max_leaders_seen = sampler.max_leaders
    result.leader_samples = sampler.samples
    return result
