"""The users file: who may call a node, with which role, and a bcrypt hash of their password.

One user a line, ``NAME:ROLE:HASH`` (``#`` starts a comment), the shape of an htpasswd file with
the role added. The hash is bcrypt's (salted, slow on purpose: a stolen file costs an attacker
a quarter of a second per guess and per user); the password itself is never written. A name
may not hold ``:``, which HTTP Basic cannot carry in a user name anyway.

``luigi-ha auth add-user`` writes it (the password from a prompt or stdin, never a flag, so it
stays out of shell history and ``ps``); the node reads it at start when ``[auth] users_file``
is set.
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import bcrypt

ROLES = ("viewer", "worker", "operator")
BCRYPT_ROUNDS = 12


class UsersFileError(ValueError):
    """The users file or a user entry is not usable; the message says which line or why."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: bytes

    def verify(self, password: str) -> bool:
        """bcrypt's check: about 0.25 s of CPU with the default cost, so callers cache the result."""
        return bcrypt.checkpw(password.encode("utf-8"), self.password_hash)


def load_users(path: str | os.PathLike[str]) -> dict[str, User]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersFileError(f"cannot read the users file {p}: {exc.strerror}") from None
    users: dict[str, User] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or parts[1] not in ROLES or not parts[2].startswith("$2"):
            raise UsersFileError(f"{p} line {number}: expected NAME:ROLE:BCRYPT_HASH with ROLE one of "
                                 f"{', '.join(ROLES)}")
        users[parts[0]] = User(parts[0], parts[1], parts[2].encode("ascii"))
    return users


def hash_password(password: str, rounds: int = BCRYPT_ROUNDS) -> bytes:
    if not password:
        raise UsersFileError("the password must not be empty")
    if len(password.encode("utf-8")) > 72:
        raise UsersFileError("the password is longer than bcrypt's 72 bytes")
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds))


def add_user(path: str | os.PathLike[str], name: str, role: str, password: str,
             rounds: int = BCRYPT_ROUNDS) -> None:
    """Add or replace ``name`` in the file (created mode 0600), keeping every other line as it was."""
    if not name or ":" in name or any(c.isspace() for c in name):
        raise UsersFileError(f"user name {name!r}: must be non-empty, without ':' or spaces")
    if role not in ROLES:
        raise UsersFileError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    entry = f"{name}:{role}:{hash_password(password, rounds).decode('ascii')}"
    p = Path(path)
    lines = p.read_text(encoding="utf-8").splitlines() if p.exists() else []
    kept = [line for line in lines if line.strip().split(":", 1)[0] != name]
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join([*kept, entry]) + "\n")
    os.replace(tmp, p)


def read_password(from_stdin: bool) -> str:
    """The new password: one line of stdin, or typed twice at a prompt that does not echo it."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise UsersFileError("the two passwords differ")
    return first
