"""Where luigi-ha's own clients find the HTTP Basic credentials for a node, and how they hide them.

In order: ``user:password@`` in the URL (what unmodified Luigi takes too); ``--user NAME`` with
``--password-file PATH`` or ``$LUIGI_HA_PASSWORD``; ``$LUIGI_HA_USER`` with
``$LUIGI_HA_PASSWORD_FILE`` or ``$LUIGI_HA_PASSWORD``; else nothing here, and requests falls back
to ``~/.netrc`` (or ``$NETRC``) for the host, as it does for every call made without credentials.

The clients take the credentials out of the URLs at once and pass them to requests separately,
so no URL they print, log, put in an error message or hand to a child process carries a
password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

Auth = tuple[str, str]


class CredentialsError(ValueError):
    """The credentials given cannot be used; the message says why (never what they are)."""


def split(url: str) -> tuple[str, Auth | None]:
    """``url`` without its ``user:password@`` part, and that part (percent-decoded) if it had one."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (unquote(parts.username), unquote(parts.password or ""))


def redact(url: str) -> str:
    """``url`` fit to print: the user name kept, the password replaced by ``***``."""
    clean, auth = split(url)
    if auth is None:
        return url
    parts = urlsplit(clean)
    return urlunsplit((parts.scheme, f"{auth[0]}:***@{parts.netloc}", parts.path, parts.query, parts.fragment))


def _read_password_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise CredentialsError(f"cannot read the password file {path}: {exc.strerror}") from None


def resolve(urls: Sequence[str], *, user: str | None = None, password_file: str | None = None,
            environ: Mapping[str, str] | None = None) -> tuple[list[str], Auth | None]:
    """The URLs without credentials, and the one set of credentials to send to all of them."""
    env = os.environ if environ is None else environ
    clean: list[str] = []
    found: set[Auth] = set()
    for url in urls:
        bare, auth = split(url)
        clean.append(bare)
        if auth is not None:
            found.add(auth)
    if len(found) > 1:
        raise CredentialsError("the URLs carry different credentials; give one user for all of them")
    if found:
        return clean, found.pop()
    name = user or env.get("LUIGI_HA_USER")
    if not name:
        return clean, None
    file = password_file or env.get("LUIGI_HA_PASSWORD_FILE")
    if file:
        return clean, (name, _read_password_file(file))
    if env.get("LUIGI_HA_PASSWORD") is not None:
        return clean, (name, env["LUIGI_HA_PASSWORD"])
    raise CredentialsError(f"user {name!r} given without a password: use --password-file, "
                           "$LUIGI_HA_PASSWORD_FILE or $LUIGI_HA_PASSWORD")


def write_netrc(path: Path, urls: Sequence[str], auth: Auth) -> Path:
    """A netrc file (mode 0600) giving ``auth`` for each URL's host: how credentials reach a child
    process without its command line or environment holding the password (``NETRC=path``)."""
    if any(c.isspace() or c == '"' for c in auth[0] + auth[1]):
        raise CredentialsError("a netrc file cannot carry a user name or password with spaces or quotes")
    hosts = sorted({urlsplit(u).hostname or "" for u in urls} - {""})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for host in hosts:
            f.write(f"machine {host} login {auth[0]} password {auth[1]}\n")
    return path
