"""What one RPC costs the load generator itself, for each client ``throughput.py`` can use.

    python bench/client_cost.py                 # 3 rounds of 3,000 calls per client
    python bench/client_cost.py --calls 10000 --rounds 5

The simulated workers of ``throughput.py`` share the machine's CPUs with the scheduler under
test, so every microsecond of CPU a client spends on a call is taken from the scheduler. This
script starts ONE luigi-ha node on a throwaway SQLite file and calls ``count_pending`` (a read:
no commit, so the node answers at once) from this process through each client in turn, the
clients alternating round by round, and prints this process's CPU time and the wall time per
call. The body is the same for every client: POST ``/api/count_pending``, ``data=<json>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CLIENTS, Procs, log, machine_line, make_client, start_ha_node, table  # noqa: E402


def per_call(kind: str, url: str, calls: int) -> tuple[float, float]:
    """(client CPU us, wall us) per call, over ``calls`` calls on one warm connection."""
    client = make_client(kind, url)
    payload = {"worker": "client-cost"}
    try:
        client.rpc("count_pending", payload)  # connect and warm up outside the clock
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            client.rpc("count_pending", payload)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        client.close()
    return cpu / calls * 1e6, wall / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=3000, help="calls per client per round (default 3000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, the clients alternating (default 3)")
    ap.add_argument("--clients", default=",".join(CLIENTS), help=f"which (default {','.join(CLIENTS)})")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.clients.split(",") if k.strip()]
    unknown = set(kinds) - set(CLIENTS)
    if unknown:
        ap.error(f"unknown client(s) {sorted(unknown)}; choose from {sorted(CLIENTS)}")
    print(machine_line())
    procs = Procs()
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="client-cost-") as tmp:
        try:
            url, _ = start_ha_node(procs, Path(tmp), f"sqlite:///{tmp}/state.db")
            for r in range(args.rounds):
                for kind in kinds:
                    samples[kind].append(per_call(kind, url, args.calls))
                    log(f"round {r + 1}: {kind} {samples[kind][-1][0]:.0f} us CPU, {samples[kind][-1][1]:.0f} us wall")
        finally:
            procs.stop_all()
    rows = []
    for kind in kinds:
        cpu = statistics.median(c for c, _ in samples[kind])
        wall = statistics.median(w for _, w in samples[kind])
        rows.append([kind, f"{cpu:.0f}", f"{wall:.0f}"])
    print()
    print(table(["client", "client CPU us/call (median)", "wall us/call (median)"], rows))
    print(json.dumps({"benchmark": "client_cost", "calls": args.calls, "rounds": args.rounds,
                      "clients": {k: {"cpu_us": [round(c, 1) for c, _ in v], "wall_us": [round(w, 1) for _, w in v]}
                                  for k, v in samples.items()}}))


if __name__ == "__main__":
    main()
