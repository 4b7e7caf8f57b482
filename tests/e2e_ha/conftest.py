"""Fixtures for the HA end-to-end tests: two real nodes on real PostgreSQL behind a real HAProxy.

Every test records the figures it observed (``figures(...)``); they are printed as each test
ends (visible with ``-s``) and again as a table at the end of the run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_ha.harness import HACluster, start_ha_cluster

LEASE_TTL = 2.0
_FIGURES = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture
def ha_cluster(pg_url: str, make_cluster: Callable[..., Any], tmp_path: Path) -> Iterator[HACluster]:
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        pytest.skip("haproxy is not installed")
    cluster = make_cluster(pg_url, size=2, lease_ttl=LEASE_TTL, name="ha")
    ha = start_ha_cluster(tmp_path / "haproxy", cluster)
    yield ha
    ha.haproxy.stop()  # the nodes are stopped by make_cluster's teardown


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    store = request.config.stash.setdefault(_FIGURES, [])

    def record(**values: Any) -> None:
        row = {"test": request.node.name, **values}
        store.append(row)
        print("\n[e2e_ha] " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)

    return record


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_FIGURES, [])
    if not rows:
        return
    terminalreporter.section("luigi-ha HA end-to-end figures")
    for row in rows:
        terminalreporter.write_line("  ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
