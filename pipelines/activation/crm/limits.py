"""A CRM's request limits, with pyrate-limiter: a short window (waited for) and a daily one (stops the run).

HubSpot allows a private app e.g. 100 requests per 10 seconds and 250,000 a day; Salesforce counts
API requests per rolling 24 hours. The short window is a sliding-window log in memory (the run
waits for room); the daily one is kept in a SQLite file in the workspace, so requests of earlier
runs today count too, and when it is spent the run stops (resumable) instead of sleeping for hours.
"""

from __future__ import annotations

from pathlib import Path

from propensity.pipelines.activation.retrying import DeliveryFailure

__all__ = ["RequestLimits", "crm_unavailable"]


def crm_unavailable() -> str | None:
    """Why the CRM integrations cannot run here (a missing extra), or None."""
    import importlib.util

    missing = [m for m, dist in (("hubspot", "hubspot-api-client"), ("simple_salesforce", "simple-salesforce"),
                                 ("pyrate_limiter", "pyrate-limiter")) if importlib.util.find_spec(m) is None]
    if missing:
        return f"the CRM integrations need the `crm` extra: pip install 'propensity[crm]' (missing: {', '.join(missing)})"
    return None


class RequestLimits:
    """``per_window`` requests per ``window_seconds`` (waited for) and ``per_day`` per 24 hours (counted
    in ``log_path``, across runs; exceeded: :class:`DeliveryFailure`, not retryable)."""

    def __init__(self, name: str, *, per_window: int, window_seconds: float, per_day: int,
                 log_path: Path | None) -> None:
        from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate, SQLiteBucket

        self.name = name
        self.per_day = per_day
        self._window = Limiter(InMemoryBucket([Rate(per_window, int(window_seconds * 1000))]))
        day = [Rate(per_day, Duration.DAY)]
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            bucket = SQLiteBucket.init_from_file(day, table="requests", db_path=str(log_path))
        else:
            bucket = InMemoryBucket(day)
        self._day = Limiter(bucket)
        self.log_path = log_path

    def acquire(self) -> None:
        """Wait for room in the short window; fail when the day's requests are spent."""
        if not self._day.try_acquire(self.name, blocking=False):
            where = f" (counted in {self.log_path})" if self.log_path else ""
            raise DeliveryFailure(f"{self.name}: the daily limit of {self.per_day:,} requests is spent{where}; "
                                  "run the push again later: it resumes where it stopped", retryable=False)
        self._window.try_acquire(self.name)
