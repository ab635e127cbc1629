"""One retry policy for every delivery: backoff with jitter, a ``Retry-After`` honoured when given.

``propensity push`` (httpx to Customer.io / Segment / webhooks) and the CRM pushes (the vendors'
own clients) fail in the same two ways, retryable or not, and wait the same way between tries;
the policy is written here once (tenacity) instead of once per client.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import tenacity

__all__ = ["DeliveryFailure", "retried", "retrying"]


class DeliveryFailure(Exception):
    """A request that failed; ``retryable`` says whether trying again may help, ``retry_after``
    (seconds) is the receiver's own ``Retry-After`` when it sent one. The message is redacted."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def retrying(*, max_attempts: int, initial_backoff_seconds: float, max_backoff_seconds: float,
             sleep: Callable[[float], None] = time.sleep) -> tenacity.Retrying:
    """Retries of a :class:`DeliveryFailure` that is ``retryable``, ``max_attempts`` tries in all.

    The wait is the failure's ``retry_after`` when it has one, else ``initial * 2**(n-1)`` plus up
    to ``initial`` of random jitter, capped at ``max_backoff_seconds``. The last failure is re-raised.
    """
    backoff = tenacity.wait_exponential_jitter(multiplier=initial_backoff_seconds, jitter=initial_backoff_seconds,
                                               max=max_backoff_seconds)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, DeliveryFailure) and exc.retry_after is not None:
            return exc.retry_after
        return backoff(state)

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max_attempts), wait=wait, sleep=sleep, reraise=True,
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, DeliveryFailure) and e.retryable))


def retried(attempt: Callable[[int], object], options, sleep: Callable[[float], None] = time.sleep):
    """``attempt(n)`` (n = 0 for the first try) until it returns, under :func:`retrying` with
    ``options``' ``max_attempts`` and backoff; ``attempt`` raises :class:`DeliveryFailure` to fail."""
    for number, state in enumerate(retrying(max_attempts=options.max_attempts, sleep=sleep,
                                            initial_backoff_seconds=options.initial_backoff_seconds,
                                            max_backoff_seconds=options.max_backoff_seconds)):
        with state:
            return attempt(number)
    raise AssertionError("unreachable: tenacity re-raises the last failure")
