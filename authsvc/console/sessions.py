"""Console sessions, CSRF tokens, the login rate limit and the one-time login link: memory only, no I/O.

A session is a random id in an HttpOnly, SameSite=Strict cookie, mapped here to the operator who logged in and
to the CSRF token every form of that session carries. Nothing here is written anywhere: a restart logs everyone
out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SESSIONS = 1000
"""Sessions kept at most; past it the least recently used one ends."""

LOGIN_FAILURES_ALLOWED = 5
"""Failed logins one address may make per LOGIN_WINDOW before it is refused (429) until the window passes."""
LOGIN_WINDOW = 60.0

LINK_OPERATOR = "local"
"""The operator id of the session the one-time login link opens."""


@dataclass(slots=True)
class Session:
    """A logged-in operator."""

    operator_id: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_seen: float = 0.0
    messages: list[tuple[str, str]] = field(default_factory=list)
    """What the next page shows once, as (kind, text): `ok` or `error`. Kept here, not in the redirect's URL,
    so that no link can put words on a console page."""

    def tell(self, kind: str, text: str) -> None:
        """Shows `text` on the next page (at most a few are kept)."""
        self.messages = [*self.messages[-4:], (kind, text)]

    def told(self) -> list[tuple[str, str]]:
        """The messages for this page, forgotten by that."""
        messages, self.messages = self.messages, []
        return messages


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the expected one; False for a missing one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class Sessions:
    """The console's sessions, ended after `idle_timeout` seconds without a request."""

    def __init__(self, idle_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, operator_id: str) -> tuple[str, Session]:
        """A new session for the operator: its id (the cookie's value) and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(operator_id, last_seen=self._clock())
        self._sessions[session_id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie's value, touched; None when there is none or it has been idle too long."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self._idle_timeout:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def close(self, session_id: str | None) -> None:
        """Ends a session (logout)."""
        if session_id:
            self._sessions.pop(session_id, None)


class LoginLimiter:
    """Counts failed logins per client address; refuses an address with too many in the last window."""

    def __init__(
        self,
        allowed: int = LOGIN_FAILURES_ALLOWED,
        window: float = LOGIN_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._allowed = allowed
        self._window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try again; 0 when it may now."""
        failures = self._recent(address)
        if len(failures) < self._allowed:
            return 0.0
        return max(0.0, failures[0] + self._window - self._clock())

    def failed(self, address: str) -> None:
        """Counts one failed login of `address`."""
        self._recent(address).append(self._clock())
        if len(self._failures) > 10 * MAX_SESSIONS:  # bounded: forget addresses whose failures are all old
            for other in [a for a in self._failures if not self._recent(a)]:
                del self._failures[other]

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.setdefault(address, deque())
        while failures and failures[0] <= self._clock() - self._window:
            failures.popleft()
        return failures


class LoginLink:
    """The one-time login link of `make run`: a random code that opens one session, then never again."""

    def __init__(self) -> None:
        self._code: str | None = secrets.token_urlsafe(32)

    @property
    def code(self) -> str | None:
        """The code while unused (to print once at start), else None."""
        return self._code

    def redeem(self, given: str | None) -> bool:
        """True, once, for the right code; the code is spent by that."""
        if self._code is None or not same_secret(given, self._code):
            return False
        self._code = None
        return True
