"""RetryPolicy's decisions, pure: the backoff curve and "wait this long, or give up".

No I/O and no sleeping: ``_retry.py`` drives these from a sync and an async loop that differ
only by ``await``.
"""

from __future__ import annotations

__all__ = ["backoff", "longer_wait", "next_delay"]


def backoff(attempt: int, base_delay: float, max_delay: float) -> float:
    """The wait after failed attempt ``attempt``: ``base_delay * 2 ** (attempt - 1)``, at most
    ``max_delay`` (tenacity's ``wait_exponential(multiplier=base_delay, max=max_delay)``).

    >>> [backoff(n, 0.5, 3.0) for n in range(1, 6)]
    [0.5, 1.0, 2.0, 3.0, 3.0]
    """
    if not base_delay:
        return 0.0
    exponent = attempt - 1
    if exponent >= 1024:  # 2.0 ** 1024 overflows a float: the cap was reached long ago
        return max_delay
    return max(0.0, min(base_delay * 2.0**exponent, max_delay))


def longer_wait(own: float, retry_after: float | None) -> float:
    """The policy's own wait, or the server's ``retry_after`` when that is longer."""
    return max(own, retry_after or 0.0)


def next_delay(
    *, own: float, retry_after: float | None, waited: float, max_total: float | None
) -> float | None:
    """How long to wait before the next attempt, or ``None`` to give up.

    ``own`` is the policy's (jittered) backoff; a server's ``retry_after`` wins when longer;
    ``max_total`` caps the time spent waiting over the whole call.

    >>> next_delay(own=1.0, retry_after=7.0, waited=0.0, max_total=None)
    7.0
    >>> next_delay(own=2.0, retry_after=None, waited=2.0, max_total=3.5) is None
    True
    """
    delay = longer_wait(own, retry_after)
    if max_total is not None and waited + delay > max_total:
        return None
    return delay
