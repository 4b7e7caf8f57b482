"""Write probe for the VM test: runs INSIDE the controller namespace (`ip netns exec`).

Every ``--interval`` seconds it sends one Luigi ``add_task`` RPC (a new, already-DONE task, so no
worker ever tries to run it) to ``--url`` and appends one JSON line per attempt to ``--out``:
``{"t": <CLOCK_MONOTONIC seconds>, "ok": bool, "status": <HTTP status or 0>, "n": <seq>}``.
CLOCK_MONOTONIC is shared by every process of the machine, so the test can compare these times
with the moment it sent its kill. Stops after ``--duration`` seconds or when ``--stop`` exists.
Only the standard library: it runs with whatever python3 started it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=120.0)
    args = parser.parse_args()
    end = time.monotonic() + args.duration
    n = 0
    with open(args.out, "a", encoding="utf-8") as out:
        while time.monotonic() < end and not os.path.exists(args.stop):
            n += 1
            payload = {"task_id": f"VMWriteProbe_{os.getpid()}_{n}", "status": "DONE", "runnable": False,
                       "worker": "vm-write-probe", "family": "VMWriteProbe", "params": {}}
            body = urllib.parse.urlencode({"data": json.dumps(payload)}).encode()
            started = time.monotonic()
            status = 0
            try:
                with urllib.request.urlopen(args.url.rstrip("/") + "/api/add_task", data=body,
                                            timeout=args.timeout) as response:
                    status = response.status
                    json.loads(response.read())
            except urllib.error.HTTPError as exc:
                status = exc.code
            except (OSError, ValueError):
                status = 0
            done = time.monotonic()
            out.write(json.dumps({"t": done, "sent": started, "ok": status == 200, "status": status, "n": n}) + "\n")
            out.flush()
            time.sleep(max(0.0, args.interval - (done - started)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
