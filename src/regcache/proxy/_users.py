"""Basic authentication of regcache's own clients (``users`` tables).

Password hashes are PBKDF2 and cost a few hundred milliseconds to check by
design, so a check runs in a worker thread and a (user, password digest)
pair that passed is remembered for the life of the process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import trio

from regcache.core import parse_basic_authorization, verify_password

#: Remembered successful logins; bounded so a flood of distinct passwords
#: for a real user name cannot grow memory (each would also cost a check).
MAX_REMEMBERED = 1024


class ClientUsers:
    """The users of one front end: name -> password hash."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)
        self._verified: set[tuple[str, bytes]] = set()

    @property
    def required(self) -> bool:
        """Whether clients must authenticate at all."""
        return bool(self._users)

    async def check(self, authorization: str | None) -> bool:
        """Whether a ``Basic`` header value names a user with the right password."""
        if not self._users:
            return True
        credentials = parse_basic_authorization(authorization or "")
        if credentials is None:
            return False
        encoded = self._users.get(credentials.username)
        if encoded is None:
            return False
        seen = (credentials.username, hashlib.sha256(credentials.password.encode()).digest())
        if seen in self._verified:
            return True
        if not await trio.to_thread.run_sync(verify_password, credentials.password, encoded):
            return False
        if len(self._verified) >= MAX_REMEMBERED:
            self._verified.clear()
        self._verified.add(seen)
        return True
