"""A tiny leader-following forwarder for laptops and the demo, where there is no HAProxy/VIP.

Production puts HAProxy (health-checking ``GET /leader``) behind a keepalived VIP; this process
does the same job in-process for a local cluster: it probes every node's ``/leader`` and forwards
each request to the one that answers 200. A 503 ("not the leader, not applied") or a refused
connection is retried against the new leader for up to ``--patience`` seconds, so Luigi workers
pointed here ride through a failover without seeing an error.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
from aiohttp import web

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


class LeaderProxy:
    def __init__(self, backends: list[str], patience: float) -> None:
        self.backends = [b.rstrip("/") for b in backends]
        self.patience = patience
        self.leader: str | None = None
        self.session: aiohttp.ClientSession | None = None

    async def probe(self) -> str | None:
        assert self.session is not None
        for backend in self.backends:
            try:
                async with self.session.get(backend + "/leader", timeout=aiohttp.ClientTimeout(total=0.5)) as r:
                    if r.status == 200:
                        self.leader = backend
                        return backend
            except (TimeoutError, aiohttp.ClientError):
                continue
        self.leader = None
        return None

    async def prober(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(0.2)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        deadline = time.monotonic() + self.patience
        while True:
            backend = self.leader or await self.probe()
            if backend is not None:
                try:
                    async with self.session.request(
                        request.method, backend + request.path_qs, data=body, headers=headers,
                        allow_redirects=False, timeout=aiohttp.ClientTimeout(total=9),
                    ) as r:
                        payload = await r.read()
                        if r.status != 503 or time.monotonic() > deadline:
                            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP_HEADERS}
                            return web.Response(status=r.status, body=payload, headers=out)
                except (TimeoutError, aiohttp.ClientError):
                    pass
                self.leader = None
            if time.monotonic() > deadline:
                return web.json_response({"error": "no leader available", "status": 503}, status=503)
            await asyncio.sleep(0.1)


async def _main(args: argparse.Namespace) -> None:
    proxy = LeaderProxy(args.backend, args.patience)
    proxy.session = aiohttp.ClientSession()
    asyncio.create_task(proxy.prober())
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", action="append", required=True)
    parser.add_argument("--patience", type=float, default=30.0)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
