"""Rate limits in memory: token buckets keyed by a name (an app, a caller's address), pure and clock-driven.

Written here rather than taken from a library: the buckets must run on the servicer's injected clock (tests
control time) and say how long until the next call may pass (google.rpc.RetryInfo), and both are a few lines.
"""

from __future__ import annotations

from authsvc.clock import MICROS_PER_SECOND, Micros
from authsvc.errors import ResourceExhausted


class RateLimiter:
    """At most `per_minute` calls a minute for each key, in bursts of up to `per_minute` (0: no limit).

    Each key's bucket refills continuously; keys whose bucket is full are forgotten once more than `max_keys`
    are held, so many callers cost memory only while they call.
    """

    def __init__(self, per_minute: int, *, max_keys: int = 100_000) -> None:
        self._per_minute = per_minute
        self._interval = 60 * MICROS_PER_SECOND // per_minute if per_minute > 0 else 0
        self._burst = per_minute * self._interval  # a full bucket, in microseconds of refill
        self._max_keys = max_keys
        self._empty_at: dict[str, Micros] = {}  # key → when its bucket would be full again (GCRA's "TAT")

    def take(self, key: str, now: Micros) -> Micros:
        """Takes one call from `key`'s bucket: 0 when it passes, else the microseconds until one would."""
        if self._per_minute <= 0:
            return 0
        full_at = max(self._empty_at.get(key, now), now)
        wait = full_at + self._interval - self._burst - now
        if wait > 0:
            return wait
        if len(self._empty_at) >= self._max_keys and key not in self._empty_at:
            self._forget_full(now)
        self._empty_at[key] = full_at + self._interval
        return 0

    def _forget_full(self, now: Micros) -> None:
        self._empty_at = {key: at for key, at in self._empty_at.items() if at > now}


def caller_address(peer: str) -> str:
    """The caller's address in a gRPC peer string (`ipv4:10.0.0.7:51234`, `ipv6:[::1]:51234`), without the port:
    a client's connections share one limit."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


class GuestLimits:
    """The rate limits of IssueGuestToken: per caller address, then per app."""

    def __init__(self, per_app: int, per_address: int) -> None:
        self._apps = RateLimiter(per_app)
        self._addresses = RateLimiter(per_address)

    def admit(self, api_key: str, peer: str, now: Micros) -> None:
        """Counts one guest token for the app and the caller; raises ResourceExhausted GUEST_RATE_LIMITED, with
        how long to wait, when either is past its limit."""
        wait = self._addresses.take(caller_address(peer), now)
        scope = "from this address"
        if not wait:
            wait = self._apps.take(api_key, now)
            scope = "for this app"
        if wait:
            seconds = wait / MICROS_PER_SECOND
            raise ResourceExhausted(
                f"too many guest tokens {scope}; retry in {seconds:.3g}s", "GUEST_RATE_LIMITED", retry_after=seconds
            )
