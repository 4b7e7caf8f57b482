"""The HTTP fuzz suite (tests/e2e/test_http_fuzz.py) run long and random, with a report.

    .venv/bin/python bench/fuzz_http.py --examples 300

runs every property with N examples each (random, not the CI's derandomized few) against a real
node, then prints the requests sent per RPC method and per route, and the 5xx answers found
(target: none). Exits with pytest's status: non-zero when any property failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="examples per property (default 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.json"
        env = {**os.environ, "LUIGI_HA_FUZZ_EXAMPLES": str(args.examples), "LUIGI_HA_FUZZ_REPORT": str(report)}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 str(REPO / "tests/e2e/test_http_fuzz.py")], cwd=REPO, env=env)
        if not report.exists():
            print("fuzz: no report written (the suite did not get to its teardown)", file=sys.stderr)
            return result.returncode or 1
        counts = json.loads(report.read_text())
    sent, errors = counts["sent"], counts["server_errors"]
    width = max(len(k) for k in sent)
    print(f"\n{'method / route':<{width}}  requests  5xx")
    for key in sorted(sent):
        print(f"{key:<{width}}  {sent[key]:>8}  {errors.get(key, 0):>3}")
    print(f"{'total':<{width}}  {sum(sent.values()):>8}  {sum(errors.values()):>3}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
