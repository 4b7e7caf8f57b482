"""Command-line flags shared by ``luigi-ha worker`` and ``luigi-ha run`` (import-light: argparse only)."""

from __future__ import annotations

import argparse


def add_common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler-url", action="append", default=None, metavar="URL",
                   help="scheduler node or VIP URL; repeat for client-side failover "
                        "(default: [luigi-ha-worker] scheduler_url, else http://localhost:8082)")
    p.add_argument("--module", action="append", default=None, help="pipeline module to import (repeatable)")
    p.add_argument("--workers", type=int, default=None, help="parallel task processes (default 1)")
    p.add_argument("--config", default=None, help="INI file with a [luigi-ha-worker] section (see worker/config.py)")
    p.add_argument("--user", default=None,
                   help="HTTP Basic user for the scheduler (also user:password@ in the URL, $LUIGI_HA_USER, ~/.netrc)")
    p.add_argument("--password-file", default=None,
                   help="file holding --user's password (also $LUIGI_HA_PASSWORD_FILE or $LUIGI_HA_PASSWORD)")
    p.add_argument("--rpc-budget", type=float, default=None,
                   help="seconds an RPC is retried across a failover before giving up (default 120)")
