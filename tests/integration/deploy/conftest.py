"""Fixtures for the deploy tests: the real binaries, or a skip that says which one is missing."""

from __future__ import annotations

import shutil

import pytest


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package: {package})")
    return path


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    return _need("haproxy", "haproxy")


@pytest.fixture(scope="session")
def keepalived_bin() -> str:
    return _need("keepalived", "keepalived")


@pytest.fixture(scope="session")
def systemd_analyze_bin() -> str:
    return _need("systemd-analyze", "systemd")


@pytest.fixture(scope="session")
def openssl_bin() -> str:
    return _need("openssl", "openssl")
