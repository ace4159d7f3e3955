"""The number of open sessions of each user, for ``max_sessions_per_user``.

A core session handles one connection only, so the proxy counts. A
session is counted once its login selects an upstream, and no longer once
the login fails or the connection closes. One counter serves every listener
of the process, so a policy limit covers IMAP4S, POP3S and SMTPS together.
"""

from __future__ import annotations

import collections


class UserSessions:
    """Numbers of open sessions per user in this process."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()

    def count(self, user: str) -> int:
        """Return the number of open sessions of ``user``."""
        return self._counts[user]

    def acquire(self, user: str, maximum: int | None) -> bool:
        """Count one more session of ``user`` unless ``maximum`` is reached.

        :param maximum: the policy's limit, or ``None`` for no limit.
        :returns: whether the session was counted.
        """
        if maximum is not None and self._counts[user] >= maximum:
            return False
        self._counts[user] += 1
        return True

    def release(self, user: str) -> None:
        """Forget one session of ``user``."""
        self._counts[user] -= 1
        if self._counts[user] <= 0:
            del self._counts[user]
