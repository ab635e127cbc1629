"""Prometheus metrics of one service instance, on their own registry (no global state)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "ServiceMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# request -> updated score; the target is p99 < 50 ms, so the buckets are fine around it
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """The counters, gauges and histograms ``GET /metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("propensity_events_ingested", "Events stored (new message ids).", registry=r)
        self.duplicates = Counter(
            "propensity_events_duplicate", "Events skipped because their messageId was stored already.", registry=r
        )
        self.contacts = Counter("propensity_identify_calls", "Identify calls stored.", registry=r)
        self.requests = Counter(
            "propensity_requests", "Ingest requests by endpoint and HTTP status.", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "propensity_request_to_score_seconds",
            "From receiving an ingest request to its events committed and scores updated.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_size = Histogram(
            "propensity_commit_events", "Events per group commit.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000), registry=r,
        )
        self.queue_depth = Gauge("propensity_queue_depth", "Events waiting for the writer.", registry=r)
        self.triggers = Counter(
            "propensity_trigger_firings", "Trigger firings queued in the outbox.", ["trigger", "source"], registry=r
        )
        self.cache_size = Gauge("propensity_contact_cache_size", "Contacts whose score state is in memory.",
                                registry=r)
        self.cache_capacity = Gauge("propensity_contact_cache_capacity",
                                    "Most contacts kept in memory (serve config cache_contacts).", registry=r)
        self.cache_evictions = Counter(
            "propensity_contact_cache_evictions",
            "Contacts evicted from memory (least recently used; reloaded from the database when needed).",
            registry=r)
        self.swept = Counter("propensity_sweep_contacts", "Contacts the decay sweep looked at (the due ones).",
                             registry=r)
        self.deliveries = Counter(
            "propensity_outbox_deliveries", "Outbox delivery attempts by outcome.", ["outcome"], registry=r
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
